# Checks of a launcher's command line, sourced by tools/dist_launch.sh and tools/slurm_train.sh:
# a wrong value is one line naming the script the user ran ($NAME), before torchrun or srun
# starts the processes, each of which would otherwise refuse it (after a cluster's queue).

# require_count VARIABLE VALUE: a whole number >= 1 (a count of processes, nodes or CPUs).
require_count() {
    [[ "$2" =~ ^[1-9][0-9]*$ ]] \
        || { echo "$NAME: $1 must be a whole number >= 1, got '$2'" >&2; exit 2; }
}

# require_config CONFIG: a file; `package::path` (fastmim::fastmim/...) is left to the tool,
# which resolves it to the package's configs. Otherwise refused in the tools' words, with the
# close config names (early_checks.py, standard library only); without a python3 to ask, plainly.
require_config() {
    { [[ "$1" == *::* ]] || [ -f "$1" ]; } && return 0
    local why
    why=$(python3 "$(dirname "${BASH_SOURCE[0]}")/early_checks.py" config "$1" 2>/dev/null) \
        || why=''
    echo "$NAME: ${why:-config file not found: '$1'}" >&2
    exit 2
}

# require_train_checkpoints TRAIN_ARGS...: the checkpoints of tools/train.py's arguments are
# refused in train.py's words (early_checks.py, standard library only): a --resume file cut
# short or holding weights only (a plain state dict, a safetensors file; told by the names in
# its pickle), a `--cfg-options load_from=` file missing, a folder or cut short. Anything else,
# and everything without a python3 to ask, is left to train.py.
require_train_checkpoints() {
    local checks=() check why
    [[ " $* " != *" --resume"* ]] || checks+=(resume)
    [[ "$*" != *load_from=* ]] || checks+=(load_from)
    for check in "${checks[@]}"; do
        why=$(python3 "$(dirname "${BASH_SOURCE[0]}")/early_checks.py" $check "$@" 2>/dev/null) \
            || why=''
        [ -z "$why" ] || { echo "$NAME: $why" >&2; exit 2; }
    done
}
