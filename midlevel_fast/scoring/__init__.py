"""Scoring an image: the paper's patch grid, the three ways to get patch features (dense sliding window,
batched crops, the naive per-patch loop) and :func:`~midlevel_fast.scoring.score.score_image` over them."""
