"""capture/restore: the one protocol of stateful components in a resume point."""

from __future__ import annotations

from fedstale.component_state import capture, restore


class _Named:
    run_state_attributes = ("history", "count")

    def __init__(self) -> None:
        self.history: list[int] = []
        self.count = 0
        self.setting = "kept"


class _Custom:
    def __init__(self) -> None:
        self.value = 1

    def run_state(self):
        return {"v": self.value * 10}

    def load_run_state(self, state) -> None:
        self.value = state["v"] // 10


def test_named_attributes_are_deep_copied_both_ways():
    component = _Named()
    component.history.append(3)
    component.count = 2
    state = capture(component)
    assert state == {"history": [3], "count": 2}
    component.history.append(4)
    assert state["history"] == [3]
    other = _Named()
    restore(other, state)
    state["history"].append(5)
    assert (other.history, other.count, other.setting) == ([3], 2, "kept")


def test_custom_methods_win_and_none_stays_none():
    component = _Custom()
    component.value = 7
    assert capture(component) == {"v": 70}
    fresh = _Custom()
    restore(fresh, {"v": 40})
    assert fresh.value == 4
    assert capture(None) is None
    restore(None, {"v": 1})
    restore(fresh, None)
    assert fresh.value == 4
    assert capture(object()) == {}
