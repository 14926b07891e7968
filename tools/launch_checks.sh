# Checks of a launcher's command line, sourced by tools/dist_launch.sh and tools/slurm_train.sh:
# a wrong value is one line naming the script the user ran ($NAME), before torchrun or srun
# starts the processes, each of which would otherwise refuse it (after a cluster's queue).

# require_count VARIABLE VALUE: a whole number >= 1 (a count of processes, nodes or CPUs).
require_count() {
    [[ "$2" =~ ^[1-9][0-9]*$ ]] \
        || { echo "$NAME: $1 must be a whole number >= 1, got '$2'" >&2; exit 2; }
}

# require_config CONFIG: a file; `package::path` (fastmim::fastmim/...) is left to the tool,
# which resolves it to the package's configs.
require_config() {
    [[ "$1" == *::* ]] || [ -f "$1" ] \
        || { echo "$NAME: config file not found: '$1'" >&2; exit 2; }
}
