"""A transform job's data settings (TransformSpec) and the rules on them that hold before any data is read (check)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import formats
from .jsonpath import JsonPathError, parse

SPLIT_TYPES = ("None", "Line", "RecordIO", "TFRecord")
COMPRESSION_TYPES = ("None", "Gzip")
BATCH_STRATEGIES = ("MultiRecord", "SingleRecord")
ASSEMBLY_TYPES = ("None", "Line")
JOIN_SOURCES = ("Input", "None")
#: SageMaker's documented ceilings: MaxPayloadInMB, and MaxConcurrentTransforms × MaxPayloadInMB.
MAX_PAYLOAD_MB = 100
MB = 1024 * 1024


@dataclass(frozen=True)
class TransformSpec:
    """How one transform job reads, batches, filters and writes its data (CreateTransformJob's data members)."""

    content_type: str | None = None      # TransformInput.ContentType
    accept: str | None = None            # TransformOutput.Accept
    split_type: str = "None"             # TransformInput.SplitType: None | Line | RecordIO | TFRecord
    compression: str = "None"            # TransformInput.CompressionType: None | Gzip
    batch_strategy: str | None = None    # SingleRecord | MultiRecord; None: MultiRecord when split
    max_payload_mb: int = 6              # 0: no size limit (SplitType None or SingleRecord only, see check)
    assemble_with: str = "None"          # TransformOutput.AssembleWith: None | Line
    input_filter: str = "$"              # DataProcessing.InputFilter
    output_filter: str = "$"             # DataProcessing.OutputFilter
    join_source: str = "None"            # DataProcessing.JoinSource: None | Input
    max_concurrent_transforms: int = 0   # 0: not set (only check() reads it, for the 100 MB rule)

    @classmethod
    def from_request(cls, body: dict[str, Any]) -> TransformSpec:
        """The spec of a CreateTransformJob request body (or a DescribeTransformJob response); absent members take
        SageMaker's defaults. Values are taken as given: :func:`check` says what is wrong with them."""
        ti = body.get("TransformInput") or {}
        to = body.get("TransformOutput") or {}
        dp = body.get("DataProcessing") or {}
        payload = body.get("MaxPayloadInMB")
        return cls(
            content_type=ti.get("ContentType") or None,
            accept=to.get("Accept") or None,
            split_type=ti.get("SplitType") or "None",
            compression=ti.get("CompressionType") or "None",
            batch_strategy=body.get("BatchStrategy") or None,
            max_payload_mb=6 if payload is None else payload,
            assemble_with=to.get("AssembleWith") or "None",
            input_filter=dp.get("InputFilter", "$"),
            output_filter=dp.get("OutputFilter", "$"),
            join_source=dp.get("JoinSource") or "None",
            max_concurrent_transforms=body.get("MaxConcurrentTransforms") or 0,
        )

    @property
    def strategy(self) -> str | None:
        """The BatchStrategy in effect: MultiRecord when split and not set, None when the object is not split."""
        if self.split_type == "None":
            return None
        return self.batch_strategy or "MultiRecord"

    @property
    def max_payload_bytes(self) -> int | None:
        """The payload limit in bytes (MaxPayloadInMB × 2^20); None for MaxPayloadInMB 0."""
        return self.max_payload_mb * MB if self.max_payload_mb else None

    @property
    def data_processing(self) -> bool:
        """Whether DataProcessing does anything (any member off its default)."""
        return self.input_filter != "$" or self.output_filter != "$" or self.join_source == "Input"

    @property
    def pairs_records(self) -> bool:
        """Whether each inference must be matched with its input record (a join, or an OutputFilter to apply)."""
        return self.join_source == "Input" or self.output_filter != "$"

    @property
    def input_format(self) -> str | None:
        """csv, json or jsonlines from TransformInput.ContentType; None for any other type."""
        return formats.of(self.content_type)

    @property
    def response_format(self) -> str | None:
        """The model's response format, from TransformOutput.Accept (the input's when Accept is not set)."""
        return formats.of(self.accept) if self.accept else self.input_format

    @property
    def output_format(self) -> str | None:
        """The format of what is written: the joined record takes the input's, a bare inference the response's."""
        return self.input_format if self.join_source == "Input" else self.response_format


def _enum(member: str, value: Any, allowed: tuple[str, ...]) -> list[str]:
    if value in allowed:
        return []
    return [f"{member} {value!r} is not one of {', '.join(allowed)}"]


def check(spec: TransformSpec) -> list[str]:
    """Every problem with ``spec`` that can be known before reading data, one message each, naming the member and
    the value; an empty list when the spec is fine. SageMaker checks filters only when the job runs ("bad path:
    the job fails"); here a filter outside the subset is refused at create time."""
    problems = (_enum("TransformInput.SplitType", spec.split_type, SPLIT_TYPES)
                + _enum("TransformInput.CompressionType", spec.compression, COMPRESSION_TYPES)
                + _enum("TransformOutput.AssembleWith", spec.assemble_with, ASSEMBLY_TYPES)
                + _enum("DataProcessing.JoinSource", spec.join_source, JOIN_SOURCES))
    if spec.batch_strategy is not None:
        problems += _enum("BatchStrategy", spec.batch_strategy, BATCH_STRATEGIES)
        if spec.split_type == "None":
            problems.append(f"BatchStrategy {spec.batch_strategy} needs TransformInput.SplitType Line, RecordIO or "
                            "TFRecord; SplitType is None (the whole object is one request)")
    problems += _check_payload(spec)
    paths = {}
    for member, text in (("InputFilter", spec.input_filter), ("OutputFilter", spec.output_filter)):
        try:
            paths[member] = parse(text)
        except JsonPathError as e:
            problems.append(f"DataProcessing.{member}: {e}")
    if spec.data_processing:
        problems += _check_data_processing(spec, paths)
    return problems


def _check_payload(spec: TransformSpec) -> list[str]:
    mb = spec.max_payload_mb
    if not isinstance(mb, int) or mb < 0:
        return [f"MaxPayloadInMB {mb!r} must be a whole number of MB, 0 or more"]
    if mb > MAX_PAYLOAD_MB:
        return [f"MaxPayloadInMB {mb} is more than the maximum of {MAX_PAYLOAD_MB}"]
    problems = []
    if mb == 0 and spec.strategy == "MultiRecord":
        # SageMaker's 0 is HTTP chunked streaming to the container; neocompile sends every payload whole, and a
        # MultiRecord mini-batch without a size limit would be the whole file in memory.
        problems.append(f"MaxPayloadInMB 0 (no payload limit) works with SplitType None or BatchStrategy "
                        f"SingleRecord; with SplitType {spec.split_type} and BatchStrategy MultiRecord a mini-batch "
                        "would have no bound: set MaxPayloadInMB between 1 and 100")
    mct = spec.max_concurrent_transforms
    if mct and mb and mct * mb > MAX_PAYLOAD_MB:
        problems.append(f"MaxConcurrentTransforms × MaxPayloadInMB is {mct} × {mb} = {mct * mb} MB, more than the "
                        f"maximum of {MAX_PAYLOAD_MB}")
    return problems


def _check_data_processing(spec: TransformSpec, paths: dict) -> list[str]:
    allowed = ", ".join(formats.MEDIA_TYPES)
    problems = []
    if spec.content_type is None:
        problems.append(f"DataProcessing needs TransformInput.ContentType, one of {allowed}, to read records")
    elif spec.input_format is None:
        problems.append(f"TransformInput.ContentType {spec.content_type!r}: DataProcessing works with {allowed} only")
    if spec.accept is not None and formats.of(spec.accept) is None:
        problems.append(f"TransformOutput.Accept {spec.accept!r}: DataProcessing works with {allowed} only")
    if spec.split_type in ("RecordIO", "TFRecord"):
        problems.append(f"TransformInput.SplitType {spec.split_type}: DataProcessing reads CSV and JSON records, "
                        "split by Line or not split (None)")
    if spec.input_format == "csv" and spec.split_type != "Line":
        problems.append(f"TransformInput.SplitType {spec.split_type}: DataProcessing with ContentType text/csv "
                        "needs SplitType Line (each row is a record)")
    if spec.output_format == "csv" and spec.assemble_with != "Line":
        problems.append(f"TransformOutput.AssembleWith {spec.assemble_with}: DataProcessing writing text/csv "
                        "needs AssembleWith Line (one row per record)")
    # CSV rows are JSON arrays: only index paths apply.
    if spec.input_format == "csv" and "InputFilter" in paths and paths["InputFilter"].uses_names:
        problems.append(f"DataProcessing.InputFilter {spec.input_filter!r}: CSV rows are arrays, only index paths "
                        "apply (such as $[1:] or $[0,2])")
    if spec.output_format == "csv" and "OutputFilter" in paths and paths["OutputFilter"].uses_names:
        what = "joined CSV rows" if spec.join_source == "Input" else "CSV inferences"
        problems.append(f"DataProcessing.OutputFilter {spec.output_filter!r}: {what} are arrays, only index paths "
                        "apply (such as $[0,-1])")
    return problems
