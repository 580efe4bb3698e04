"""The SVG QR, drawn by a real browser engine, decodes back to its text."""
import os
import subprocess
import urllib.parse
import urllib.request


def test_svg_rendered_by_chromium_decodes(gateway, tmp_path):
    text = "2@svgCheck0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH,k1=,k2=,k3"
    with urllib.request.urlopen(gateway.http + "/api/v1/qr?format=svg&text=" + urllib.parse.quote(text), timeout=10) as r:
        svg = r.read()
    (tmp_path / "q.svg").write_bytes(svg)
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}", "--window-size=600,600",
                    f"file://{tmp_path / 'q.svg'}"], capture_output=True, timeout=120)
    out = subprocess.run(["zbarimg", "--quiet", "--raw", "-Sdisable", "-Sqrcode.enable", "-Sbinary", str(shot)], capture_output=True, timeout=30).stdout.decode()
    assert out == text
