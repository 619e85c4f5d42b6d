import numpy as np
import pytest

from neocompile.datainput import TensorSpec
from neocompile.errors import VerificationError
from neocompile.verify import default_tolerance, random_inputs, verify

SPECS = [TensorSpec("x", "float32", (2, 3)), TensorSpec("ids", "int64", (4,))]


def test_random_inputs_are_seeded_and_typed():
    a, b = random_inputs(SPECS), random_inputs(SPECS)
    assert a[0].dtype == np.float32 and a[1].dtype == np.int64 and a[0].shape == (2, 3)
    np.testing.assert_array_equal(a[0], b[0])


def test_eight_bit_inputs_span_their_range_and_indices_stay_small():
    u8, i8, ids, rows = random_inputs([TensorSpec("img", "uint8", (4096,)), TensorSpec("q", "int8", (4096,)),
                                       TensorSpec("ids", "int64", (4096,)), TensorSpec("data", "float32", ("N", 3))])
    assert u8.min() < 16 and u8.max() > 240  # a quantized input's whole grid, not one end of it
    assert i8.min() < -112 and i8.max() > 112
    assert 0 <= ids.min() and ids.max() < 10  # token ids and indices must stay valid for small vocabularies
    assert rows.shape == (203, 3)  # a symbolic dimension gets a size that is no multiple of the row blocks
    specs = [TensorSpec("data", "float32", (1000,)), TensorSpec("ids", "int64", (4096,))]
    (with_nan, ids_nan), (plain, ids_plain) = random_inputs(specs, missing=0.25), random_inputs(specs)
    assert 0.2 < np.isnan(with_nan).mean() < 0.3 and not np.isnan(plain).any()  # NaN only when asked
    keep = ~np.isnan(with_nan)  # the same values otherwise, and integer inputs untouched
    assert np.array_equal(with_nan[keep], plain[keep]) and np.array_equal(ids_nan, ids_plain)


def test_matching_outputs_pass_with_error_numbers():
    report = verify(lambda xs: [xs[0] * 2], lambda xs: [xs[0] * 2 + 1e-7], SPECS, ["y"], "native")
    assert report["status"] == "passed" and 0 < report["outputs"][0]["max_abs_error"] < 1e-6


def test_a_wrong_result_fails_with_the_numbers_in_the_message():
    with pytest.raises(VerificationError, match=r"y: max abs 0.5, max rel") as info:
        verify(lambda xs: [xs[0] + 0.5], lambda xs: [xs[0]], SPECS, ["y"], "native")
    assert info.value.report["status"] == "failed"


def test_shape_or_count_mismatch_is_explained():
    with pytest.raises(VerificationError, match=r"output 'y' has shape \[3, 2\], the source framework gives \[2, 3\]"):
        verify(lambda xs: [xs[0].T], lambda xs: [xs[0]], SPECS, ["y"], "native")
    with pytest.raises(VerificationError, match="returned 2 outputs, the source framework 1"):
        verify(lambda xs: [xs[0], xs[0]], lambda xs: [xs[0]], SPECS, ["y"], "native")


def test_default_tolerance_follows_the_precision_the_model_computes_in():
    assert default_tolerance("float32")[:2] == (1e-3, 1e-4)
    assert default_tolerance("float16")[:2] == (16 * 2.0**-10, 2.0**-10)
    assert default_tolerance("bfloat16")[:2] == (16 * 2.0**-7, 2.0**-7)
    rtol, atol, why = default_tolerance("int8")
    assert (rtol, atol) == (16 * 2.0**-8, 2.0**-8) and why.startswith("default for int8 arithmetic")


def test_compiler_options_override_the_derived_tolerance_and_the_report_says_so():
    from neocompile.pipeline import _tolerance

    assert _tolerance({}, "float16") == {"rtol": 16 * 2.0**-10, "atol": 2.0**-10,
                                         "tolerance_source": default_tolerance("float16")[2]}
    both = _tolerance({"verify-rtol": 0.1, "verify-atol": 0.2}, "int8")
    assert both == {"rtol": 0.1, "atol": 0.2, "tolerance_source": "CompilerOptions verify-rtol and verify-atol"}
    one = _tolerance({"verify-atol": 0.5}, "float16")
    assert (one["rtol"], one["atol"]) == (16 * 2.0**-10, 0.5)
    assert one["tolerance_source"] == "CompilerOptions verify-atol; otherwise the " + default_tolerance("float16")[2]
    with pytest.raises(VerificationError, match=r"atol 0.0 \+ rtol 0.0 \* max\|expected\|; CompilerOptions verify-rtol\)"):
        verify(lambda xs: [xs[0] + 1], lambda xs: [xs[0]], SPECS, ["y"], "native", rtol=0.0, atol=0.0,
               tolerance_source="CompilerOptions verify-rtol")
