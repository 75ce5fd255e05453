"""The model: the adaptation head and its file (``head``), the parts the head file carries (presence
calibration ``presence``, box regression ``box_regression``), and the trunk plus head that scores patches
(``classifier``: :class:`~midlevel_fast.model.classifier.PatchClassifier`, ``load_model``)."""
