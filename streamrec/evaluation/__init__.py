"""Offline quality evaluation: protocols, baselines, the served model's adapter, Kafka replay.

``streamrec evaluate`` (:mod:`streamrec.cli.evaluate`) runs every model of :func:`streamrec.evaluation.models.all_models`
under one of two protocols (:mod:`streamrec.evaluation.protocols`):

- ``leave-one-out``: the S3-Rec authors' protocol (last item per user is the test item,
  second-to-last the validation item, full ranking with the history masked);
- ``prequential``: test-then-learn over the time-ordered stream (Vinagre et al. 2014).

The served model (:mod:`streamrec.evaluation.served`) goes through the worker's own functions;
:mod:`streamrec.evaluation.through_kafka` replays a dataset through a real broker and worker and scores
the recommendation messages. Results, commands and plots: ``docs/quality.md``.
"""
