"""The trainer reads the same image files as the daemon: one list on each side (no shared code
between them), compared here, and every listed kind really decodes with the trainer's OpenCV."""

import re
from pathlib import Path

import cv2
import numpy as np

from crad.data import IMAGE_EXTENSIONS, load_samples, read_image_uint8

DAEMON_LIST = Path(__file__).resolve().parents[2] / "src" / "shared" / "images.ts"


def daemon_extensions() -> tuple[str, ...]:
    source = DAEMON_LIST.read_text()
    found = re.search(r"export const IMAGE_EXTENSIONS\b[^=]*=\s*\[([^\]]*)\]", source)
    assert found, f"no IMAGE_EXTENSIONS array in {DAEMON_LIST}"
    return tuple(re.findall(r"'([^']*)'", found.group(1)))


def test_trainer_list_is_the_daemons():
    assert IMAGE_EXTENSIONS == daemon_extensions()


def test_every_listed_extension_decodes_and_is_found_in_any_case(tmp_path):
    for i, ext in enumerate(IMAGE_EXTENSIONS):
        value = 20 * (i + 1)
        gray = np.full((12, 16), value, np.uint8)  # grey and flat: .pgm and lossy formats keep the value
        ok, encoded = cv2.imencode(ext, gray if ext == ".pgm" else cv2.merge([gray] * 3))
        assert ok, ext
        name = f"img-{i:02d}" + (ext.upper() if i % 2 else ext)
        encoded.tofile(str(tmp_path / name))
    (tmp_path / "notes.txt").write_text("not an image")
    samples = load_samples(str(tmp_path), "folder")
    assert len(samples) == len(IMAGE_EXTENSIONS)
    for i, (sample, ext) in enumerate(zip(samples, IMAGE_EXTENSIONS)):
        image = read_image_uint8(sample.path, None)
        assert image is not None and image.shape == (12, 16, 3), ext
        assert abs(int(image[6, 8, 0]) - 20 * (i + 1)) <= 3, ext
