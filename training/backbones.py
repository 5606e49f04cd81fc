"""Backbone names (TF-free, so `smearscope --help` does not import TensorFlow)."""

BACKBONES = ("mobilenetv2", "efficientnet-lite0", "efficientnetb0", "efficientnetb3")

#: The pretrained files in ../shared/pretrained that match each backbone's `--weights PATH`.
DEFAULT_WEIGHT_FILES = {
    "mobilenetv2": "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
    "efficientnet-lite0": "efficientnet_lite0_imagenet_notop.keras",
}
