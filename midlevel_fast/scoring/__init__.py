"""Scoring images with a model: :func:`~midlevel_fast.scoring.score.score_image` and its batched form
(``images``), given boxes (``boxes``), the naive per-patch loop every fast path is checked against (``naive``),
detections (``detections``; soft-NMS in ``soft_nms``), points (``points``), the options they take
(``options``) and the result they return (``result``)."""
