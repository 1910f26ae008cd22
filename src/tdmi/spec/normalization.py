"""ImageNet statistics of RGB pixels in [0, 1] (what the HRNet backbone was pretrained with), the
input normalisation every artifact records: kept free of OpenCV so that code which only needs
the numbers (calibration checks, the GPU evidence kit on a bare image) imports without it."""

from __future__ import annotations

import numpy as np

IMAGENET_MEAN: np.ndarray = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD: np.ndarray = np.array([0.229, 0.224, 0.225], dtype=np.float32)
IMAGENET_MEAN.flags.writeable = False
IMAGENET_STD.flags.writeable = False
