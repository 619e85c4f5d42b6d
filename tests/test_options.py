import pytest

from neocompile import options
from neocompile.errors import ValidationError


def test_single_quoted_aws_example_form_is_accepted():
    assert options.parse("{'mattr': ['+neon'], 'mcpu': 'cortex-a72'}") == {"mattr": ["+neon"], "mcpu": "cortex-a72"}


def test_keys_mixing_dash_underscore_and_case_are_canonical():
    got = options.parse('{"gpu_code": "sm_53", "TRT-VER": "5.0.6", "cuda-ver": "10.0", "ANDROID_PLATFORM": 27}')
    assert got == {"gpu-code": "sm_53", "trt-ver": "5.0.6", "cuda-ver": "10.0", "android-platform": 27}


def test_dtype_aliases():
    assert options.parse('{"dtype": "long"}') == {"dtype": "int64"}
    assert options.parse("{'DTYPE': 'float'}") == {"dtype": "float32"}


def test_dtype_per_input_as_a_list_or_by_name():
    assert options.parse('{"dtype": ["float", "long", "bool"]}') == {"dtype": ["float32", "int64", "bool"]}
    assert options.parse('{"dtype": {"input_ids": "int64", "pixels": "half"}}') == {
        "dtype": {"input_ids": "int64", "pixels": "float16"}}
    with pytest.raises(ValidationError, match=r"CompilerOptions.dtype\[1\]: 'complex64' is not valid; expected one of "
                                              r"float32, .*a list of them \(one per input, in input order\)"):
        options.parse('{"dtype": ["int64", "complex64"]}')
    with pytest.raises(ValidationError, match=r"CompilerOptions.dtype.mask: 7 is not valid"):
        options.parse('{"dtype": {"mask": 7}}')


def test_mattr_as_comma_string():
    assert options.parse('{"mattr": "+neon,+vfp4"}')["mattr"] == ["+neon", "+vfp4"]


def test_unknown_option_is_named_with_the_known_ones():
    with pytest.raises(ValidationError, match="unknown option 'mcpus'; expected one of .*mcpu"):
        options.parse('{"mcpus": "x"}')


def test_bad_values_are_named():
    with pytest.raises(ValidationError, match=r"CompilerOptions.dtype: 'float8' is not valid; expected one of float32"):
        options.parse('{"dtype": "float8"}')
    with pytest.raises(ValidationError, match="gpu-code: '53' is not valid; expected a CUDA arch"):
        options.parse('{"gpu-code": "53"}')
    with pytest.raises(ValidationError, match="expected a list of LLVM features"):
        options.parse('{"mattr": ["neon"]}')


def test_not_an_object():
    with pytest.raises(ValidationError, match="is not a JSON object"):
        options.parse("[1, 2, 3]")


def test_empty_is_no_options():
    assert options.parse(None) == {} and options.parse("") == {}
