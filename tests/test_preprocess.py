"""Card preprocessing equals what the original PyTorch pipelines computed, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from convert_torch_refs import torch
from hnd_jax.cards import load_card
from hnd_jax.errors import HndError
from hnd_jax.preprocess import list_image_files, load_rgb, pil_filter, preprocess_files, preprocess_uint8, resize_rgb


def _images(n=3, h=37, w=53, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def test_paper_models_scale_like_to_tensor():
    """HND: transforms.ToTensor() == uint8 tensor .float().div(255), no mean/std."""
    imgs = _images()
    want = torch.from_numpy(imgs).float().div(255).numpy()
    for name in ("age", "gender", "smile", "fairface", "beauty", "facenet"):
        got = preprocess_uint8(imgs, load_card(name))
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)


def test_mtcnn_standardisation_matches_facenet_pytorch():
    """facenet-pytorch detect_face: (im_data - 127.5) * 0.0078125 on float pixels."""
    imgs = _images()
    want = ((torch.from_numpy(imgs).float() - 127.5) * 0.0078125).numpy()
    for name in ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet", "inception_resnet_v1_vggface2"):
        np.testing.assert_array_equal(preprocess_uint8(imgs, load_card(name)), want)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P"])
def test_files_are_resized_with_the_card_filter(tmp_path, mode):
    arr = _images(1, 41, 29, seed=1)[0]
    img = Image.fromarray(arr).convert(mode)
    path = tmp_path / f"im_{mode}.png"
    img.save(path)
    card = load_card("age")  # 128, bicubic
    got = preprocess_files([path], card)
    ref = np.asarray(Image.open(path).convert("RGB").resize((128, 128), Image.BICUBIC), dtype=np.float32) / 255
    assert got.shape == (1, 128, 128, 3)
    np.testing.assert_array_equal(got[0], ref.astype(np.float32))


def test_grayscale_resize_then_replicate_equals_hnd_order(tmp_path):
    """HND resized L images before pasting them into RGB; converting first gives the same pixels."""
    gray = Image.fromarray(_images(1, 30, 20, seed=2)[0, :, :, 0], mode="L")
    hnd = Image.new("RGB", (64, 64))
    hnd.paste(gray.resize((64, 64), Image.BICUBIC))
    np.testing.assert_array_equal(resize_rgb(gray, 64, "bicubic"), np.asarray(hnd))


def test_bad_inputs(tmp_path):
    card = load_card("age")
    with pytest.raises(HndError, match="uint8"):
        preprocess_uint8(np.zeros((1, 4, 4, 3), np.float32), card)
    with pytest.raises(HndError, match="NHWC"):
        preprocess_uint8(np.zeros((1, 3, 4, 4), np.uint8), card)
    with pytest.raises(HndError, match="unknown resize filter"):
        pil_filter("cubic")
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(HndError, match="bad.png"):
        load_rgb(tmp_path / "bad.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HndError, match="no image files"):
        list_image_files(tmp_path / "empty")
