"""The on-disk feature cache: its format (``feature_cache``) and how it is filled, resumably and across ranks
(``build``)."""
