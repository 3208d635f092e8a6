"""The backtest report rendered in a real headless Chromium (Debian's package), offline.

`make test` installs Chromium (deploy/local/browser_tools.sh, run by `make
deploy-tools`); the test skips only when it is not installed. The screenshot
is decoded here (PNG: zlib and the five scanline filters) and must show the
charts: the statistic's blue, the threshold's red and the alert markers'
orange, over a white page.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import orjson
import pytest

from stream_monitor.backtest.report import ALERT_FILL, STATISTIC_COLOUR, THRESHOLD_COLOUR
from stream_monitor.cli import main
from stream_monitor.simulate import Scenario, parse_drift, stream

WIDTH, HEIGHT = 1200, 2000


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("chromium is not installed (make deploy-tools installs it: deploy/local/browser_tools.sh)")


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def decode_png(data: bytes) -> np.ndarray:
    """An 8-bit RGB or RGBA PNG as an array of shape (height, width, channels); checks every CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    position, idat, header = 8, b"", None
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length:position + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r}"
        position += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    assert header is not None, "no IHDR"
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * channels
    assert len(raw) == height * (stride + 1)
    rows = np.zeros((height, stride), dtype=np.uint8)
    previous = np.zeros(stride, dtype=np.uint8)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = np.frombuffer(raw, dtype=np.uint8, count=stride, offset=y * (stride + 1) + 1)
        if kind == 0:
            row = line.copy()
        elif kind == 1:  # Sub: a running sum per channel, mod 256
            row = (np.cumsum(line.reshape(width, channels), axis=0, dtype=np.uint64) % 256).astype(
                np.uint8).reshape(stride)
        elif kind == 2:
            row = line + previous
        elif kind in (3, 4):
            out = bytearray(stride)
            up = previous.tobytes()
            for x, value in enumerate(line.tobytes()):
                left = out[x - channels] if x >= channels else 0
                if kind == 3:
                    out[x] = (value + ((left + up[x]) >> 1)) & 0xFF
                else:
                    corner = up[x - channels] if x >= channels else 0
                    out[x] = (value + _paeth(left, up[x], corner)) & 0xFF
            row = np.frombuffer(bytes(out), dtype=np.uint8)
        else:
            raise AssertionError(f"unknown PNG filter {kind}")
        rows[y] = row
        previous = row
    return rows.reshape(height, width, channels)


def _near(image: np.ndarray, colour: str, tolerance: int = 40) -> np.ndarray:
    target = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)
    return (np.abs(image[:, :, :3].astype(np.int16) - target) <= tolerance).all(axis=2)


def test_the_report_renders_its_charts_in_headless_chromium(tmp_path):
    chromium = _chromium()
    scenario = Scenario(models=("fraud",), n_events=6000, n_numeric=2, n_categorical=1, seed=5,
                        drifts=(parse_drift("feature:f00@3000:shift=1.5"),))
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(orjson.dumps(item) + b"\n" for kind, item in stream(scenario)
                                if kind == "prediction") + b"not json\n")
    report = tmp_path / "report.html"
    assert main(["replay", "--input", str(events), "--alerts-out", str(tmp_path / "alerts.jsonl"),
                 "--report", str(report), "--no-progress"]) == 0
    assert (tmp_path / "alerts.jsonl").read_bytes().count(b"\n") >= 1

    screenshot = tmp_path / "out.png"
    profile = tmp_path / "profile"
    done = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
         "--no-first-run", f"--screenshot={screenshot}", f"--window-size={WIDTH},{HEIGHT}",
         report.as_uri()],
        capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    image = decode_png(screenshot.read_bytes())
    assert image.shape[:2] == (HEIGHT, WIDTH)

    white = (image[:, :, :3] >= 250).all(axis=2)
    assert white.mean() > 0.5  # a white page, not a blank or black one
    blue, red, orange = (_near(image, colour) for colour in (STATISTIC_COLOUR, THRESHOLD_COLOUR, ALERT_FILL))
    assert blue.sum() > 500 and red.sum() > 200 and orange.sum() > 30, (blue.sum(), red.sum(), orange.sum())
    # the chart area: where the statistic is drawn; it is no thin strip, and it holds many colours
    rows, columns = np.nonzero(blue)
    top, bottom, left, right = rows.min(), rows.max(), columns.min(), columns.max()
    assert bottom - top > 80 and right - left > 600, (top, bottom, left, right)
    area = image[top:bottom + 1, left:right + 1, :3]
    assert (~white[top:bottom + 1, left:right + 1]).mean() > 0.02
    colours = {tuple(pixel) for pixel in area.reshape(-1, 3)[::7].tolist()}
    assert len(colours) > 30
