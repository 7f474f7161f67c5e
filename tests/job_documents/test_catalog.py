"""The catalog: the packaged ATS roots with their pins, and sandbox-style catalog files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from job_documents import CatalogError, UnknownRoot, default_catalog_path, load_catalog
from job_documents.testing import make_leaf, make_root_ca, private_key_pem, write_catalog

# Pinned from the Amazon Trust Services roots as shipped in Mozilla's and Debian's stores.
ATS_PINS = {
    "amazon-root-ca-1": "8ecde6884f3d87b1125ba31ac3fcb13d7016de7f57cc904fe1cb97c6ae98196e",
    "amazon-root-ca-2": "1ba5b2aa8c65401a82960118f80bec4f62304d83cec4713a19c39c011ea46db4",
    "amazon-root-ca-3": "18ce6cfe7bf14e60b2e347b8dfe868cb31d02ebb3ada271569f50343b46db3a4",
    "amazon-root-ca-4": "e35d28419ed02025cfa69038cd623962458da5c695fbdea3c22b0bfb25897092",
    "starfield-services-root-ca-g2": (
        "568d6905a2c88708a4b3025190edcfedb1974a606a13c6e5290fcb2ae63edab5"
    ),
}


def test_the_packaged_catalog_holds_the_five_ats_roots_with_their_pins():
    catalog = load_catalog()
    assert catalog.is_default
    assert not catalog.sandbox
    assert {r.name: r.sha256 for r in catalog.roots} == ATS_PINS
    assert {r.name: r.key_type for r in catalog.roots} == {
        "amazon-root-ca-1": "RSA 2048",
        "amazon-root-ca-2": "RSA 4096",
        "amazon-root-ca-3": "EC P-256",
        "amazon-root-ca-4": "EC P-384",
        "starfield-services-root-ca-g2": "RSA 2048",
    }
    assert catalog.get("amazon-root-ca-3").subject == "Amazon Root CA 3"
    assert catalog.source == str(default_catalog_path())


def test_roots_are_found_by_name_or_by_fingerprint_in_any_common_spelling():
    catalog = load_catalog()
    pin = ATS_PINS["amazon-root-ca-4"]
    colons = ":".join(pin[i : i + 2] for i in range(0, 64, 2)).upper()
    assert catalog.get("amazon-root-ca-4") == catalog.get(pin) == catalog.get(colons)
    assert catalog.fingerprints() == frozenset(ATS_PINS.values())


def test_an_unknown_root_error_lists_the_known_names():
    with pytest.raises(UnknownRoot, match="amazon-root-ca-1, amazon-root-ca-2") as caught:
        load_catalog().get("verisign-class-3-g5")
    assert "--allow-unknown-ca" in str(caught.value)


def test_a_sandbox_style_catalog_of_generated_roots_loads(tmp_path: Path):
    one, two = make_root_ca("Sandbox Root 1"), make_root_ca("Sandbox Root 2", key_kind="rsa-2048")
    path = write_catalog(tmp_path / "sandbox", {"sandbox-root-1": one, "sandbox-root-2": two})
    catalog = load_catalog(path)
    assert not catalog.is_default
    assert catalog.sandbox
    assert catalog.names() == ("sandbox-root-1", "sandbox-root-2")
    assert catalog.get("sandbox-root-2").sha256 == two.sha256
    assert catalog.get("sandbox-root-2").key_type == "RSA 2048"
    assert load_catalog(path.parent) == catalog


def _catalog_with(tmp_path: Path, **changes) -> Path:
    root = make_root_ca("Catalog Test Root")
    path = write_catalog(tmp_path, {"root": root})
    document = json.loads(path.read_text())
    for key, value in changes.items():
        if key.startswith("root_"):
            document["roots"][0][key[5:]] = value
        else:
            document[key] = value
    path.write_text(json.dumps(document))
    return path


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"root_sha256": "0" * 64}, "the catalog pins"),
        ({"root_sha256": "AB" * 32}, "64 lowercase hex"),
        ({"root_file": "missing.pem"}, "cannot read"),
        ({"root_file": "../outside.pem"}, "relative to the catalog"),
        ({"root_name": "has space"}, "name 'has space'"),
        ({"catalog": "something-else/1"}, "not a root catalog"),
        ({"roots": []}, "at least one root"),
        ({"sandbox": "yes"}, '"sandbox" a boolean'),
    ],
)
def test_a_broken_catalog_is_refused_with_the_reason(tmp_path: Path, changes, says):
    with pytest.raises(CatalogError, match=says):
        load_catalog(_catalog_with(tmp_path, **changes))


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("leaf", "not a CA"),
        ("key", "private key"),
        ("garbage", "not a PEM certificate"),
    ],
)
def test_a_catalog_file_that_is_not_a_root_is_refused(tmp_path: Path, content, says):
    root = make_root_ca("Catalog Root")
    pem = {
        "leaf": make_leaf(root).pem,
        "key": root.pem + private_key_pem(root.key),
        "garbage": "hello",
    }[content]
    path = write_catalog(tmp_path, {"bad": root})
    (tmp_path / "bad.pem").write_text(pem)
    with pytest.raises(CatalogError, match=says):
        load_catalog(path)


def test_duplicate_roots_in_a_catalog_are_refused(tmp_path: Path):
    root = make_root_ca("Twice")
    path = write_catalog(tmp_path, {"first": root, "second": root})
    with pytest.raises(CatalogError, match="twice"):
        load_catalog(path)


def test_a_missing_or_unparsable_catalog_file_is_refused(tmp_path: Path):
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(CatalogError, match="not valid JSON"):
        load_catalog(tmp_path / "bad.json")
