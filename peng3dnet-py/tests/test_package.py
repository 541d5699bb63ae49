"""The installed package: typed, documented, every public name stubbed."""

import ast
import inspect
from pathlib import Path

import peng3dnet_rs
from peng3dnet_rs import _native

PACKAGE = Path(peng3dnet_rs.__file__).parent


def test_typed_package_ships_its_stubs():
    assert (PACKAGE / "py.typed").is_file()
    assert (PACKAGE / "_native.pyi").is_file()


def test_every_native_name_is_stubbed_and_documented():
    tree = ast.parse((PACKAGE / "_native.pyi").read_text())
    stubbed = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    stubbed |= {t.id for n in tree.body if isinstance(n, ast.AnnAssign) for t in [n.target]}
    public = {name for name in dir(_native) if not name.startswith("_")}
    assert public <= stubbed, public - stubbed
    for name in public:
        obj = getattr(_native, name)
        if callable(obj):
            assert inspect.getdoc(obj), "%s has no docstring" % name


def test_public_api():
    for name in peng3dnet_rs.__all__:
        assert hasattr(peng3dnet_rs, name), name
    assert inspect.iscoroutinefunction(peng3dnet_rs.ping_server_async)
    assert inspect.getdoc(peng3dnet_rs)


def test_the_package_docstring_example_runs():
    import doctest

    failures, tried = doctest.testmod(peng3dnet_rs, verbose=False)
    assert tried >= 3 and failures == 0


def test_the_sessions_stubs_name_every_method_and_property():
    tree = ast.parse((PACKAGE / "_native.pyi").read_text())
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    for name in ("PingSession", "AsyncPingSession"):
        stubbed = {n.name for n in classes[name].body if isinstance(n, ast.FunctionDef)}
        public = {a for a in dir(getattr(_native, name)) if not a.startswith("_")}
        assert public <= stubbed, (name, public - stubbed)
        assert {"__enter__", "__exit__"} <= stubbed or {"__aenter__", "__aexit__"} <= stubbed


def test_the_compat_modules_are_documented():
    from peng3dnet_rs.compat import errors, net, ping

    for module in (errors, net, ping):
        assert inspect.getdoc(module)
        for name in module.__all__:
            assert inspect.getdoc(getattr(module, name)) or name == "WRITEBACK", (module.__name__, name)
