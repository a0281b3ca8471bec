"""Where the shared data set's backbone weights are, and skip marks for tests that need them."""

import pytest

from crad.backbones import shared_data_dir

V1_DIR = shared_data_dir() / "backbones" / "mobilenet_v1_0.75_224"
CORAL_FILE = shared_data_dir() / "backbones" / "coral_mobilenet_v2" / "mobilenet_v2_1.0_224_quant.tflite"

needs_v1 = pytest.mark.skipif(not (V1_DIR / "model.json").is_file(),
                              reason=f"shared data set absent: {V1_DIR} (set CRAD_SHARED_DATA)")
needs_coral = pytest.mark.skipif(not CORAL_FILE.is_file(),
                                 reason=f"shared data set absent: {CORAL_FILE} (set CRAD_SHARED_DATA)")
