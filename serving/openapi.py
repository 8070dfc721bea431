"""The server's OpenAPI 3.0 document (served at ``/v2/openapi.json``), written out by hand.

Schemas follow the Open Inference Protocol REST spec; schemathesis and clients can read it.
"""

from __future__ import annotations

from typing import Any

from serving import __version__
from serving.protocol import DATATYPES

_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
_TENSOR_META = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string", "enum": sorted(DATATYPES)},
        "shape": {"type": "array", "items": {"type": "integer"}},
    },
}
_REQUEST_INPUT = {
    "type": "object",
    "required": ["name", "shape", "datatype", "data"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": sorted(DATATYPES)},
        "parameters": {"type": "object"},
        "data": {"type": "array", "description": "Row-major tensor contents, flat or nested."},
    },
}
_INFER_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/RequestInput"}},
        "outputs": {
            "type": "array",
            "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
        },
    },
}
_INFER_RESPONSE = {
    "type": "object",
    "required": ["model_name", "outputs"],
    "properties": {
        "model_name": {"type": "string"},
        "id": {"type": "string"},
        "outputs": {
            "type": "array",
            "items": {
                "allOf": [
                    {"$ref": "#/components/schemas/TensorMetadata"},
                    {"type": "object", "required": ["data"], "properties": {"data": {"type": "array"}}},
                ]
            },
        },
    },
}


def _json(schema: dict[str, Any] | str, description: str) -> dict[str, Any]:
    if isinstance(schema, str):
        schema = {"$ref": f"#/components/schemas/{schema}"}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Bad request",
        404: "Unknown model",
        408: "Body too slow",
        413: "Body too large",
        503: "Not ready or overloaded",
    }
    return {str(c): _json("Error", text[c]) for c in codes}


_FLAG = {"type": "object", "additionalProperties": {"type": "boolean"}}


def document(model_name: str | None = None, input_names: list[str] | None = None) -> dict[str, Any]:
    """The document; with a loaded model, its name and input names are spelled out as enums."""
    name_param: list[dict[str, Any]] = [
        {"name": "model_name", "in": "path", "required": True, "schema": {"type": "string"}}
    ]
    request_input: dict[str, Any] = _REQUEST_INPUT
    if model_name is not None:
        name_param = [{**name_param[0], "schema": {"type": "string", "enum": [model_name]}}]
    if input_names:
        props = {**_REQUEST_INPUT["properties"], "name": {"type": "string", "enum": input_names}}  # type: ignore[dict-item]
        request_input = {**_REQUEST_INPUT, "properties": props}
    return {
        "openapi": "3.0.3",
        "info": {"title": "modelstack serving (Open Inference Protocol v2)", "version": __version__},
        "paths": {
            "/v2": {"get": {"responses": {"200": _json({"type": "object"}, "Server metadata")}}},
            "/v2/health/live": {"get": {"responses": {"200": _json(_FLAG, "Live")}}},
            "/v2/health/ready": {
                "get": {"responses": {"200": _json(_FLAG, "Ready"), "503": _json(_FLAG, "Not ready")}}
            },
            "/v2/models/{model_name}": {
                "get": {
                    "parameters": name_param,
                    "responses": {"200": _json("ModelMetadata", "Model metadata"), **_errors(404, 503)},
                }
            },
            "/v2/models/{model_name}/ready": {
                "get": {
                    "parameters": name_param,
                    "responses": {"200": _json({"type": "object"}, "Ready"), **_errors(404, 503)},
                }
            },
            "/v2/models/{model_name}/infer": {
                "post": {
                    "parameters": name_param,
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/InferRequest"}}},
                    },
                    "responses": {
                        "200": _json("InferResponse", "Inference result"),
                        **_errors(400, 404, 408, 413, 503),
                    },
                }
            },
            "/predict": {
                "post": {
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["instances"],
                                    "properties": {"instances": {"type": "array"}},
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json(
                            {"type": "object", "properties": {"predictions": {"type": "array"}}}, "Predictions"
                        ),
                        **_errors(400, 408, 413, 503),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "responses": {
                        "200": {
                            "description": "Prometheus text exposition",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    }
                }
            },
        },
        "components": {
            "schemas": {
                "Error": _ERROR,
                "TensorMetadata": _TENSOR_META,
                "ModelMetadata": {
                    "type": "object",
                    "required": ["name", "platform", "inputs", "outputs"],
                    "properties": {
                        "name": {"type": "string"},
                        "platform": {"type": "string"},
                        "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/TensorMetadata"}},
                        "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/TensorMetadata"}},
                    },
                },
                "RequestInput": request_input,
                "InferRequest": _INFER_REQUEST,
                "InferResponse": _INFER_RESPONSE,
            }
        },
    }
