from __future__ import annotations

from pathlib import Path

import pytest

README_CAMPAIGN = (Path(__file__).parent / "data" / "readme-campaign.yaml").read_text()


@pytest.fixture
def readme_campaign(tmp_path: Path) -> Path:
    path = tmp_path / "campaign.yaml"
    path.write_text(README_CAMPAIGN)
    return path
