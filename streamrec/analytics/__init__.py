"""Shopper-behaviour analytics over events: the funnel, interest across categories, trends, sessions."""
