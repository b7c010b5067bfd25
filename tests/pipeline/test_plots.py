import base64
import xml.etree.ElementTree as ET

import pytest

from tenali_pipeline.plots import line_chart_svg, markdown_image


def test_line_chart_is_valid_svg_with_a_line_per_series():
    svg = line_chart_svg({"train loss": [(10, 6.2), (20, 4.1), (30, 3.9)], "validation loss": [(30, 4.0)]})
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert len(root.findall(f"{ns}polyline")) == 1  # one point draws a dot, not a line
    assert len(root.findall(f"{ns}circle")) == 4
    labels = [t.text for t in root.findall(f"{ns}text")]
    assert "train loss" in labels and "validation loss" in labels and "6.2" in labels


def test_markdown_image_embeds_the_svg():
    md = markdown_image("<svg/>", "loss curve")
    assert md.startswith("![loss curve](data:image/svg+xml;base64,")
    assert base64.b64decode(md.split(",", 1)[1].rstrip(")")) == b"<svg/>"


def test_nothing_to_plot_is_an_error():
    with pytest.raises(ValueError):
        line_chart_svg({"empty": []})
