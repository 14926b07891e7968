"""The converters' check of their OUT name (a module beside them, which each puts on
``sys.path``: tools/convert is no package)."""


def check_out_name(out, advice=''):
    """Refuse an OUT named ``.safetensors``, before anything is read: the converters write OUT
    with ``torch.save``, and torch, timm and safetensors all read a ``.safetensors`` name with
    safetensors, so the file loaded nowhere ('header too large'). ``advice`` follows 'give it a
    .pth name'."""
    if out.endswith('.safetensors'):
        raise ValueError(f'OUT {out} is written with torch.save: give it a .pth name{advice} '
                         '(a .safetensors name makes torch, timm and safetensors read it as '
                         'safetensors, which it is not)')
