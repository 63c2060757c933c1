"""Demand forecasting: daily units per shop, category and item from events (demand), statsforecast models over
trading days (models), the rolling-origin backtest (backtest), the live forecaster (service)."""
