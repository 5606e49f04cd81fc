"""smearscope edge device: camera, quality gate, TFLite inference, store, web page, sync client.

Runs without TensorFlow. training/ and convert/ import this package for the shared contract
(preprocessing, bundle format); this package never imports them.
"""

__version__ = "0.1.0"
