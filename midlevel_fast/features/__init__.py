"""Patch features from the frozen trunk: the paper's multi-scale grid (``grid``), the dense sliding window
(``dense``), batched crops (``batched``), the image size limits (``limits``), the one entry point of both
(``patch_features``), candidate boxes for a detector on the dense lattice (``proposals``), and features of
arbitrary boxes ROI-pooled from the dense mode's trunk maps (``roi``, on ``roi_align``). Nothing here knows a
head."""
