"""The chart gives Ray pods the Hugging Face token as a Secret-volume file named by HF_TOKEN_PATH,
instead of an HF_TOKEN variable fixed for the pod's life, on the claim that the installed
huggingface_hub (what vLLM downloads checkpoints with) reads that file at each call. A replica
the autoscaler starts on a running pod after the token was rotated (the old one revoked) then
downloads with the new token. Checked here on the real library in a process of its own, with
the file swapped as the kubelet swaps it (tests/secret_volume.py); nothing is downloaded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from secret_volume import SecretVolume

# Prints the token huggingface_hub would send, once per line read from stdin.
READER = """
import sys
from huggingface_hub import get_token
for _ in sys.stdin:
    print(get_token(), flush=True)
"""


def test_huggingface_hub_reads_a_rotated_token_file_without_a_restart(tmp_path: Path) -> None:
    volume = SecretVolume(tmp_path / "huggingface", {"token": "hf_old_token_value\n"})
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env |= {"HF_TOKEN_PATH": str(volume.path("token")), "HF_HOME": str(tmp_path / "hf-home")}
    reader = subprocess.Popen(
        [sys.executable, "-c", READER],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert reader.stdin is not None and reader.stdout is not None
    try:

        def token_now() -> str:
            assert reader.stdin is not None and reader.stdout is not None
            reader.stdin.write("\n")
            reader.stdin.flush()
            return reader.stdout.readline().strip()

        assert token_now() == "hf_old_token_value"
        volume.update({"token": "hf_new_token_value\n"})
        assert token_now() == "hf_new_token_value"
    finally:
        reader.stdin.close()
        reader.wait(30)
    assert reader.returncode == 0
