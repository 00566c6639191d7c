#!/usr/bin/env bash
# Prepare what test_train_inference_python.sh needs for CONFIG and MODE:
#
#   bash test_tipc/prepare.sh CONFIG MODE
#
#   lite_train_lite_infer, lite_train_whole_infer: extract test_images/lite_data.tar.
#   whole_infer: the same, and if the weights named by infer_model do not exist, make
#       stand-in weights by one short lite training: nothing can be downloaded here, so
#       these test the export/inference chain, not accuracy. Put real weights (e.g. the
#       converted torchvision AlexNet) at that path to test those instead.
#   whole_train_whole_infer: check that the full data set (--data-path) is in place;
#       ImageNet cannot be fetched automatically.
# Exit status 2 for a bad config or usage, 1 if preparing failed.
set -uo pipefail

usage() {
    echo "usage: bash $0 CONFIG MODE" >&2
    exit 2
}

(( $# == 2 )) || usage
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONFIG=$(realpath -m -- "$1")
MODE=$2
cd "$REPO_ROOT" || exit 2
# shellcheck source=test_tipc/common_func.sh
source test_tipc/common_func.sh

load_config "$CONFIG"
validate_config "$MODE"
resolve_python
LITE_TAR=test_images/lite_data.tar

# The bundled lite data set in ./lite_data, extracted (atomically, once) by the same
# function train.py uses.
extract_lite_data() {
    if "$PYTHON_BIN" -c 'import sys; from paddlevision.datasets import extract_lite_data as extract; print("lite data in", extract(sys.argv[1], "."))' "$LITE_TAR"; then
        return 0
    fi
    echo "error: could not extract ${LITE_TAR} to lite_data/" >&2
    return 1
}

# Stand-in weights for whole_infer: one epoch on the lite data, copied to WEIGHTS.
make_standin_weights() {
    local weights=$1 train_dir
    train_dir=$(mktemp -d "${TMPDIR:-/tmp}/tipc_standin.XXXXXX") || return 1
    echo "note: ${weights} not found; training stand-in weights (1 epoch on lite_data, CPU)"
    if "$PYTHON_BIN" train.py --device=cpu --data-path=./lite_data --epochs=1 --batch-size=4 --seed=0 \
        --output-dir="$train_dir" > "$train_dir/train.log" 2>&1; then
        mkdir -p -- "$(dirname "$weights")"
        cp -- "$train_dir/latest.pdparams" "$weights"
        rm -rf -- "$train_dir"
        echo "wrote stand-in weights to ${weights}"
        return 0
    fi
    echo "error: the stand-in training failed; its log:" >&2
    tail -n 20 "$train_dir/train.log" >&2
    rm -rf -- "$train_dir"
    return 1
}

main() {
    local weights data_path
    case "$MODE" in
        lite_train_lite_infer | lite_train_whole_infer)
            extract_lite_data
            ;;
        whole_infer)
            extract_lite_data || return 1
            weights=$(config_mode_value "$L_INFER_MODEL" "$MODE")
            if [[ -e "$weights" ]]; then
                echo "using the weights at ${weights}"
            else
                make_standin_weights "$weights"
            fi
            ;;
        whole_train_whole_infer)
            data_path=$(config_mode_value "$L_TRAIN_PARAM1" "$MODE")
            if [[ -d "$data_path/train" && -d "$data_path/val" ]]; then
                echo "using the data set at ${data_path}"
            else
                echo "error: ${data_path:-the data set (line $((L_TRAIN_PARAM1 + 1)) of the config)} needs train/ and val/ class folders (ImageNet-1k); download it yourself" >&2
                return 1
            fi
            ;;
    esac
}

main
