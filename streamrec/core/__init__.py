"""The pure core: everything the worker decides, with no Kafka and no Faust in it.

``interest`` (how an event changes a user's vector), ``state`` (what is kept per user, and
its codec), ``items`` (the live item side: catalog rules, new items, trending) and ``batch``
(one micro-batch of raw messages in; states, lists and rejects out). Both worker engines,
training and the evaluation harness call these same functions.
"""
