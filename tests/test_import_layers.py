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
    """The hooks import the engine's modules (PreemptionHook the loops), so the engine's modules
    import no hook: loading the loops would run the hooks package, which needs the loops, and
    PreemptionHook would have to import them inside a method."""
    found = {name: [imported for imported in imports if imported.startswith('fastmim.engine.hooks')]
             for name, imports in imports_of_modules_in('engine').items()}
    assert {name: imports for name, imports in found.items() if imports} == {}
    assert 'fastmim.engine.loops.inside_epoch_resume_problem' in imports_of_modules_in(
        'engine/hooks')['preemption_hook.py']


def test_model_utils_import_no_backbone():
    """The backbones import models.utils (loading, bias tables, shape reading, the contract
    they keep), so models.utils imports nothing of the backbones: the contract through which
    load_pretrained asks each backbone lives in models.utils, beside that loader."""
    found = {name: [imported for imported in imports
                    if imported.startswith('fastmim.models.backbones')]
             for name, imports in imports_of_modules_in('models/utils').items()}
    assert {name: imports for name, imports in found.items() if imports} == {}
    assert 'fastmim.models.utils.backbone_contract.BackboneContract' in imports_of_modules_in(
        'models/backbones')['swin.py']


def package_of(name: str) -> str:
    """The innermost fastmim package that holds the module or name ``name``."""
    parts = name.split('.')
    while not PACKAGE.parent.joinpath(*parts).is_dir():
        parts = parts[:-1]
    return '.'.join(parts)


def test_no_two_packages_import_each_other():
    """Each pair of fastmim's packages is imported one way only when loaded (their ancestors
    aside, which are loading already): two that import each other load only in some orders."""
    imported_by = {}
    for path in sorted(PACKAGE.rglob('*.py')):
        package = '.'.join(path.relative_to(PACKAGE.parent).parts[:-1])
        others = {package_of(name) for name in module_level_imports(path)
                  if name.startswith('fastmim.')}
        imported_by.setdefault(package, set()).update(
            other for other in others
            if other != package and not package.startswith(other + '.'))
    pairs = sorted((package, other) for package, others in imported_by.items()
                   for other in others
                   if package < other and package in imported_by.get(other, ()))
    assert pairs == []


def test_file_io_is_a_low_layer():
    """fastmim/fileio.py writes and hashes files for the engine, the datasets and the tools:
    it imports only fastmim's leaf modules, so a dataset or a tool that writes a results file
    loads no checkpoint loader, and the engine can import it without a cycle."""
    imported = sorted({name.rsplit('.', 1)[0]
                       for name in module_level_imports(PACKAGE / 'fileio.py')
                       if name.startswith('fastmim.')})
    assert imported == ['fastmim.errors', 'fastmim.file_checks']
