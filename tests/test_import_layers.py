"""Imports between fastmim's packages that would close a cycle, read from the code's module-level
imports (AST, no execution). Importing any module of a package first runs the package's
``__init__``, which imports all its modules: an import from another package is an import of
that whole package, and two packages that import each other load only in some orders."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / 'fastmim'


def module_level_imports(path: Path):
    """The fastmim names ``path`` imports when it is loaded (not inside functions), as
    ``package.module.name`` for ``from package.module import name``."""
    package = path.relative_to(PACKAGE.parent).with_suffix('').parts[:-1]
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(package[:len(package) - node.level + 1]) if node.level else []
            module = '.'.join(base + ([node.module] if node.module else []))
            yield from (f'{module}.{alias.name}' for alias in node.names)


def imports_of_modules_in(folder: str):
    """``{file: its module-level fastmim imports}`` of the modules of ``folder`` itself (not
    its sub-packages; not its ``__init__``, whose imports are the package's own)."""
    return {path.name: sorted(name for name in module_level_imports(path)
                              if name.startswith('fastmim.'))
            for path in sorted((PACKAGE / folder).glob('*.py')) if path.name != '__init__.py'}


def test_engine_modules_import_no_hook_when_loaded():
    """The hooks import the engine's modules (PreemptionHook the loops); loops.py imported
    ``iter_based_schedulers`` from a hook module, so loading the loops ran the hooks package,
    which needed the loops: PreemptionHook had to import them inside a method."""
    found = {name: [imported for imported in imports if imported.startswith('fastmim.engine.hooks')]
             for name, imports in imports_of_modules_in('engine').items()}
    assert {name: imports for name, imports in found.items() if imports} == {}
    assert 'fastmim.engine.loops.inside_epoch_resume_problem' in imports_of_modules_in(
        'engine/hooks')['preemption_hook.py']


def test_model_utils_ask_backbones_only_through_their_contract():
    """The backbones import models.utils (loading, bias tables); relative_bias.py imported the
    backbones' base module for the helper ``grid_pair``, which belongs with the utils. The one
    import left is the contract through which load_pretrained asks each backbone."""
    found = {name: [imported for imported in imports
                    if imported.startswith('fastmim.models.backbones')]
             for name, imports in imports_of_modules_in('models/utils').items()}
    assert {name: imports for name, imports in found.items() if imports} == {
        'pretrained.py': ['fastmim.models.backbones.base.BackboneContract']}


def test_file_io_is_a_low_layer():
    """fastmim/fileio.py writes and hashes files for the engine, the datasets and the tools:
    it imports only fastmim's leaf modules, so a dataset or a tool that writes a results file
    loads no checkpoint loader, and the engine can import it without a cycle."""
    imported = sorted({name.rsplit('.', 1)[0]
                       for name in module_level_imports(PACKAGE / 'fileio.py')
                       if name.startswith('fastmim.')})
    assert imported == ['fastmim.errors', 'fastmim.file_checks']
