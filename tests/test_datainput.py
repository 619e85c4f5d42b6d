import pytest

from neocompile import datainput
from neocompile.datainput import TensorSpec
from neocompile.errors import InputConfigurationError


@pytest.mark.parametrize(
    "text",
    [
        '{"data": [1, 3, 224, 224]}',
        '{\\"data\\": [1, 3, 224, 224]}',  # console / escaped-shell form
        "{'data': [1, 3, 224, 224]}",  # AWS examples' single quotes
        '"{\\"data\\": [1,3,224,224]}"',  # quoted once more
        {"data": [1, 3, 224, 224]},  # already parsed (Python API)
    ],
)
def test_dictionary_form_in_every_escaping(text):
    assert datainput.parse(text, "ONNX") == {"data": (1, 3, 224, 224)}


def test_list_form_names_inputs_input0_input1_for_pytorch():
    assert datainput.parse("[[1,3,224,224],[1,10]]", "PYTORCH", allow_list=True) == {
        "input0": (1, 3, 224, 224),
        "input1": (1, 10),
    }


def test_single_shape_list_is_one_pytorch_input():
    assert datainput.parse("[1,3,8,8]", "PYTORCH", allow_list=True) == {"input0": (1, 3, 8, 8)}


def test_pytorch_inputs_are_ordered_by_name_numerically():
    shapes = datainput.parse('{"input10": [1], "input2": [2], "input0": [3]}', "PYTORCH", allow_list=True)
    assert list(shapes) == ["input0", "input2", "input10"]


def test_list_form_is_refused_for_onnx():
    with pytest.raises(InputConfigurationError, match="list, which only PyTorch accepts; ONNX expects a dictionary"):
        datainput.parse("[[1,3,224,224]]", "ONNX")


def test_malformed_json_names_neo_text_and_value():
    with pytest.raises(InputConfigurationError, match=r"InputConfiguration: Cannot load DataInputConfig. Incorrect json format. Got '\{\"data\": \[1,3'"):
        datainput.parse('{"data": [1,3', "ONNX")


def test_not_a_dictionary_or_list():
    with pytest.raises(InputConfigurationError, match="DataInputConfig is not dictionary or list"):
        datainput.parse("42", "ONNX")


@pytest.mark.parametrize("dims,bad", [("[1, 0, 224, 224]", "dimension 1 = 0"), ("[1, -3, 2]", "dimension 1 = -3"),
                                       ("[1, 2.5]", "dimension 1 = 2.5"), ('[1, "x"]', 'dimension 1 = "x"'),
                                       ("[true, 3]", "dimension 0 = true")])
def test_non_positive_or_non_integer_dims_are_named(dims, bad):
    with pytest.raises(InputConfigurationError, match=f"input 'data' has {bad}.*every dimension must be a positive integer"):
        datainput.parse(f'{{"data": {dims}}}', "ONNX")


def test_empty_shape_is_refused():
    with pytest.raises(InputConfigurationError, match="input 'data' has shape \\[\\]; expected a non-empty list"):
        datainput.parse('{"data": []}', "ONNX")


def test_too_long_config_is_refused():
    with pytest.raises(InputConfigurationError, match="maximum is 16384"):
        datainput.parse('{"data": [' + "1," * 9000 + "1]}", "ONNX")


def test_absent_config_is_none():
    assert datainput.parse(None, "ONNX") is None
    assert datainput.parse("  ", "ONNX") is None


MODEL = [TensorSpec("data", "float32", ("N", 3, 32, 32))]


def test_check_fills_static_inputs_and_keeps_given_batch():
    assert datainput.check_against_model({"data": (4, 3, 32, 32)}, MODEL, "ONNX", "NCHW", "ex") == {"data": (4, 3, 32, 32)}
    static = [TensorSpec("x", "float32", (1, 3))]
    assert datainput.check_against_model(None, static, "ONNX", "NCHW", "ex") == {"x": (1, 3)}


def test_check_reports_unknown_input_name_with_the_models_inputs():
    with pytest.raises(InputConfigurationError, match=r"names input\(s\) 'image' that the ONNX model does not have. Model inputs: data\[N,3,32,32\]"):
        datainput.check_against_model({"image": (1, 3, 32, 32)}, MODEL, "ONNX", "NCHW", "ex")


def test_check_reports_missing_input_name_for_dynamic_model():
    with pytest.raises(InputConfigurationError, match=r"no shape for model input 'data' \(declared shape \[N,3,32,32\]\)"):
        datainput.check_against_model({}, MODEL, "ONNX", "NCHW", '{"data": [1,3,224,224]}')


def test_check_wrong_rank_states_the_layout_rule():
    with pytest.raises(InputConfigurationError, match=r"Input data has wrong shape.*rank 3.*rank 4.*provided in NCHW format. For example"):
        datainput.check_against_model({"data": (1, 32, 32)}, MODEL, "ONNX", "NCHW", '{"data": [1,3,224,224]}')


def test_check_wrong_order_nhwc_for_nchw_model_states_the_layout_rule():
    with pytest.raises(InputConfigurationError, match=r"fixes dimension 1 to 3.*NCHW format"):
        datainput.check_against_model({"data": (1, 32, 32, 3)}, MODEL, "ONNX", "NCHW", "ex")
