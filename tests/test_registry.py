import pytest

from unirep.errors import UnknownNameError
from unirep.registry import Registry


def test_register_get_list_and_aliases():
    reg = Registry("widget")

    @reg.register("alpha", aliases=("a",))
    class Alpha:
        pass

    @reg.register()
    def beta():
        return 1

    assert reg.get("alpha") is Alpha and reg.get("a") is Alpha
    assert reg.get("beta") is beta
    assert reg.list() == ["a", "alpha", "beta"]
    assert reg.list("al*") == ["alpha"]
    assert "alpha" in reg and len(reg) == 3


def test_duplicates_raise():
    reg = Registry("widget")
    reg.add("x", 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.add("x", 2)
    assert reg.get("x") == 1


def test_unknown_name_suggests_close_names():
    reg = Registry("widget")
    reg.add("efficientnet_lite0", 1)
    with pytest.raises(UnknownNameError, match="did you mean efficientnet_lite0"):
        reg.get("efficientnet_lite")
    with pytest.raises(UnknownNameError, match="unirep list widgets"):
        reg.get("zzz")


def test_fallback_resolver_used_only_for_unregistered_names():
    reg = Registry("widget")
    reg.add("known", "registered")
    reg.add_fallback(lambda name: f"dynamic:{name}" if name.startswith("dyn") else None)
    assert reg.get("known") == "registered"
    assert reg.get("dyn-1") == "dynamic:dyn-1"
    with pytest.raises(UnknownNameError):
        reg.get("other")
