"""Content Credentials (C2PA manifests) of an input, read with the C2PA SDK (`c2pa-python`): who signed the file, with
what, when, whether it says it was made by an AI model, its edit history, and whether the signature and hashes
check out. Shown beside the detector's verdict, never mixed into it (docs/protocol.md, "Provenance").

States:
    none      no manifest in the file (proves nothing: most files have none, and stripping one is easy)
    invalid   a manifest whose signature or hashes do not check (`failure_codes` say which): the bytes changed
              after signing, or the manifest is damaged
    valid     the manifest checks out; its signer is not on the trust list in use (by default there is none)
    trusted   the manifest checks out and its signing certificate chains to a configured trust anchor
    error     the SDK could not read the file (an unsupported container, a truncated file); `reason` says why

Nothing is fetched from the network: no OCSP, no remote manifests.
"""
from __future__ import annotations

import base64
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATES = ("none", "invalid", "valid", "trusted", "error")
STATE_MEANING = {
    "none": "no Content Credentials in the file; this proves nothing either way (most files carry none, and they "
            "are easy to strip)",
    "invalid": "the file carries Content Credentials that do not check out (see the failure codes): the file "
               "changed after it was signed, or its manifest is damaged",
    "valid": "the Content Credentials check out: the signer named signed these bytes; the signer is not on a trust "
             "list in use, and a valid signature shows who signed, not that the content is true",
    "trusted": "the Content Credentials check out and the signer chains to a trust anchor you configured; this "
               "shows who signed these bytes, not that the content is true",
    "error": "the file's Content Credentials could not be read",
}
# IPTC digital source types that say a trained model made the media or part of it
AI_SOURCE_TYPES = ("trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia")
UNTRUSTED = "signingCredential.untrusted"  # a failure code that only says the signer is on no trust list in use
# never fetch anything: certificate status (OCSP) and manifests stored elsewhere stay unread
OFFLINE = {"verify": {"ocsp_fetch": False, "remote_manifest_fetch": False}}


@dataclass
class Provenance:
    """What the Content Credentials of one input say (`read_provenance`)."""

    state: str  # one of STATES
    reason: str = ""  # why invalid or error, in words
    claim_generator: str | None = None  # the software that wrote the manifest, e.g. "Adobe Photoshop 26.0"
    signer: dict | None = None  # {"issuer", "common_name"} of the signing certificate
    time: str | None = None  # signing time from a time-stamp, when the manifest has one
    title: str | None = None
    actions: list[dict] = field(default_factory=list)  # {"action", "digital_source_type", "software_agent",
    # "when", "ai_generated"}
    ai_generated: bool = False  # an action's digital source type says a trained model made the media or part of it
    ingredients: list[dict] = field(default_factory=list)  # {"title", "relationship", "format", "state",
    # "failure_codes"}: the files it was made from (edit history)
    failure_codes: list[str] = field(default_factory=list)  # the SDK's failure codes of the active manifest
    informational_codes: list[str] = field(default_factory=list)
    success_codes: list[str] = field(default_factory=list)

    @property
    def meaning(self) -> str:
        return STATE_MEANING[self.state]

    def to_dict(self) -> dict:
        return asdict(self) | {"meaning": self.meaning}


def read_trust_anchors(path: str | Path) -> str:
    """The PEM text of a trust-anchor file (one or more CA certificates), checked to hold at least one and only
    certificates that decode (base64 of a DER sequence), so that a damaged file is refused once, up front, rather
    than turning every input's provenance into an error."""
    if not str(path):
        raise ValueError("--trust-anchors: an empty file name (expected a PEM file of CA certificates)")
    where, path = f"--trust-anchors {path}", Path(path)
    if not path.exists():
        raise ValueError(f"{where}: no such file")
    if not path.is_file():
        raise ValueError(f"{where}: not a regular file (expected a PEM file of CA certificates)")
    text = path.read_text(errors="replace")
    blocks = re.findall(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", text, re.S)
    if not blocks:
        raise ValueError(f"{where}: expected PEM certificates (-----BEGIN CERTIFICATE----- ... "
                         "-----END CERTIFICATE-----)")
    for number, block in enumerate(blocks, 1):
        try:
            der = base64.b64decode("".join(block.split()), validate=True)
        except ValueError:
            der = b""
        if not der.startswith(b"\x30"):
            raise ValueError(f"{where}: certificate {number} is not valid base64-encoded DER")
    return text


def read_provenance(path: str | Path, trust_anchors: str | None = None) -> Provenance:
    """The Content Credentials of the file at `path`; `trust_anchors`: PEM text of the CA certificates a signer must
    chain to for `trusted` (None: no trust list, states stop at `valid`). Never raises: a file the SDK cannot read
    is `error` with the reason."""
    try:
        import c2pa
    except ImportError as error:
        return Provenance("error", reason=f"the C2PA SDK (c2pa-python) is not installed: {error}")
    settings = json.loads(json.dumps(OFFLINE))
    if trust_anchors:
        settings["verify"]["verify_trust"] = True
        settings["trust"] = {"trust_anchors": trust_anchors}
    try:
        context = c2pa.Context.from_dict(settings)
        with open(path, "rb") as stream:
            reader = c2pa.Reader(_format(path), stream, context=context)
        try:
            state = reader.get_validation_state()
            manifest = reader.get_active_manifest() or {}
            results = reader.get_validation_results() or {}
        finally:
            reader.close()
    except Exception as error:  # the SDK's typed errors: ManifestNotFound, NotSupported, Other (parse errors), ...
        kind = type(error).__name__.lstrip("_").removeprefix("C2pa")
        if kind == "ManifestNotFound":
            return Provenance("none")
        return Provenance("error", reason=f"{Path(path).name}: {_first_line(error)}")
    return _provenance(state, manifest, results.get("activeManifest") or {})


def _format(path: str | Path) -> str:
    """The MIME type the SDK reads `path` as: by its first bytes where they are clear (a JPEG named .mp4 is read as
    a JPEG), else by its extension."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG"):
        return "image/png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp":
        return "video/quicktime" if head[8:10] == b"qt" else "video/mp4"
    return Path(path).suffix.lstrip(".").lower() or "application/octet-stream"


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [""])[0][:300]


def _provenance(sdk_state: str | None, manifest: dict, results: dict) -> Provenance:
    codes = {kind: [entry.get("code", "") for entry in results.get(kind) or []]
             for kind in ("failure", "informational", "success")}
    state = {"Trusted": "trusted", "Valid": "valid", "Invalid": "invalid"}.get(sdk_state or "", "invalid")
    reason = ""
    if state == "invalid":
        explanations = [f"{e.get('code')}: {e.get('explanation', '')}" for e in results.get("failure") or []
                        if e.get("code") != UNTRUSTED]
        reason = "; ".join(explanations) or f"the SDK's validation state is {sdk_state!r}"
    signature = manifest.get("signature_info") or {}
    actions = [_action(a) for assertion in manifest.get("assertions") or []
               if str(assertion.get("label", "")).startswith("c2pa.actions")
               for a in (assertion.get("data") or {}).get("actions") or []]
    return Provenance(
        state=state, reason=reason, claim_generator=_generator(manifest), title=manifest.get("title"),
        signer={"issuer": signature.get("issuer"), "common_name": signature.get("common_name")} if signature else None,
        time=signature.get("time"), actions=actions, ai_generated=any(a["ai_generated"] for a in actions),
        ingredients=[_ingredient(i) for i in manifest.get("ingredients") or []],
        failure_codes=codes["failure"], informational_codes=codes["informational"], success_codes=codes["success"])


def _generator(manifest: dict) -> str | None:
    info = manifest.get("claim_generator_info") or []
    if info:
        return " ".join(str(info[0][k]) for k in ("name", "version") if info[0].get(k))
    return manifest.get("claim_generator")


def _action(action: dict) -> dict:
    source = action.get("digitalSourceType")
    agent = action.get("softwareAgent")
    return {"action": action.get("action"), "digital_source_type": source,
            "software_agent": agent.get("name") if isinstance(agent, dict) else agent, "when": action.get("when"),
            "ai_generated": bool(source) and str(source).rsplit("/", 1)[-1] in AI_SOURCE_TYPES}


def _ingredient(ingredient: dict) -> dict:
    """An ingredient with the state of its own manifest (none when it carried none)."""
    results = (ingredient.get("validation_results") or {}).get("activeManifest") or {}
    failures = [e.get("code", "") for e in results.get("failure") or []]
    if not ingredient.get("active_manifest") and not ingredient.get("manifest_data") and not results:
        state = "none"
    elif [c for c in failures if c != UNTRUSTED]:
        state = "invalid"
    else:
        state = "valid"
    return {"title": ingredient.get("title"), "relationship": ingredient.get("relationship"),
            "format": ingredient.get("format"), "state": state, "failure_codes": failures}
