"""Every fault of ``tests/faults_table.py`` gives the error the table says; ``docs/faults.md`` is the table."""

from pathlib import Path

import pytest

from faults_table import FAULTS, Fault, check_table, render

DOC = Path(__file__).resolve().parents[1] / "docs" / "faults.md"


def _param(fault: Fault):
    marks = [pytest.mark.xfail(strict=True, reason=fault.xfail)] if fault.xfail else []
    return pytest.param(fault, id=fault.id, marks=marks)


@pytest.mark.parametrize("fault", [_param(f) for f in FAULTS])
def test_fault_gives_the_documented_error(fault: Fault, tmp_path):
    if fault.expect == "raises":
        with pytest.raises(BaseException) as info:
            fault.trigger(tmp_path)
        assert isinstance(info.value, fault.error), f"{type(info.value).__name__}: {info.value}"
        assert fault.phrase in str(info.value), str(info.value)
    elif fault.expect == "warns":
        with pytest.warns(fault.error) as record:
            fault.trigger(tmp_path)
        messages = [str(w.message) for w in record if issubclass(w.category, fault.error)]
        assert any(fault.phrase in m for m in messages), messages
    elif fault.expect == "returns":
        value = fault.trigger(tmp_path)
        assert fault.phrase in str(value), str(value)
    else:  # exits: the CLI ends with status 2 and the message on stderr, no traceback
        code, stderr = fault.trigger(tmp_path)
        assert code == 2, (code, stderr)
        assert fault.phrase in stderr and "Traceback" not in stderr, stderr


def test_table_is_well_formed_and_large_enough():
    check_table()
    assert len(FAULTS) >= 25
    assert len({f.layer.split(" ")[0] for f in FAULTS}) >= 8, "faults should cover many layers"


def test_doc_is_the_rendered_table():
    assert DOC.read_text() == render(), (
        "docs/faults.md is stale: run `.venv/bin/python tests/faults_table.py > docs/faults.md`"
    )
