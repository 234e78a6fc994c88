"""Pipeline specs are refused with the field and the reason."""

import pytest

from runtime.specs.common import SpecError
from runtime.specs.manifest import parse_document


def load(spec: dict, name: str = "p"):
    r = parse_document({"apiVersion": "mlops.seldon.io/v1alpha1", "kind": "Pipeline",
                        "metadata": {"name": name}, "spec": spec})
    return r.spec.validate_for(name)


@pytest.mark.parametrize("spec, message", [
    ({"steps": [{"name": "a"}, {"name": "b", "inputs": ["c"]}]},
     "steps[1].inputs: 'c' is not a step of this pipeline (steps: a, b)"),
    ({"steps": [{"name": "a"}], "output": {"steps": ["zz.outputs"]}},
     "output.steps: 'zz.outputs' is not a step of this pipeline"),
    ({"steps": [{"name": "a", "inputs": ["b"]}, {"name": "b", "inputs": ["a.outputs.X"]}]},
     "steps: cycle a -> b -> a; set allowCycles"),
    ({"steps": [{"name": "a"}, {"name": "b", "inputs": ["a"], "triggers": ["a"]}]},
     "steps[1].triggers: 'a' is also an input of the step"),
    ({"steps": [{"name": "p"}]}, "steps: a step is named like the pipeline ('p')"),
    ({"steps": [{"name": "a", "inputs": ["other.inputs.x"]}]},
     "steps[0].inputs: 'other.inputs.x' is not a step of this pipeline"),
    ({"steps": [{"name": "a"}], "input": {"externalInputs": ["nodots"]}},
     "input.externalInputs: 'nodots': expected <pipeline>.outputs"),
    ({"steps": [{"name": "a", "inputsJoinType": "left"}]}, "steps.0.inputsJoinType"),
])
def test_bad_pipeline_specs_are_refused_with_the_reason(spec, message):
    with pytest.raises(SpecError) as e:
        load(spec)
    assert message in str(e.value)


def test_good_specs_pass():
    load({"steps": [{"name": "a", "inputs": ["p.inputs.x"]},
                    {"name": "b", "inputs": ["a.outputs.OUTPUT", "pipeline.inputs.y"],
                     "triggers": ["a.outputs.T"]}]})
    load({"steps": [{"name": "a", "inputs": ["b"]}, {"name": "b", "inputs": ["a"]}],
          "allowCycles": True, "maxStepRevisits": 3})
    load({"input": {"externalInputs": ["q.outputs", "q.step.m.outputs.X"]},
          "steps": [{"name": "a"}]})
