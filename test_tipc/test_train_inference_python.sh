#!/usr/bin/env bash
# TIPC basic chain: train -> eval -> export -> Paddle Inference (a matrix of options) ->
# consistency of infer.py with tools/predict.py, as a TIPC config describes it.
#
#   bash test_tipc/test_train_inference_python.sh CONFIG MODE
#
# MODE: lite_train_lite_infer | lite_train_whole_infer | whole_infer | whole_train_whole_infer.
# Every command is reported as "Run successfully/failed with command - CMD!" on stdout
# and in $TIPC_OUTPUT_DIR/results_python.log (default test_tipc/output, emptied first);
# each command's output goes to its own log there. Exit status: 0 if all commands
# succeeded, 1 if any failed, 2 for a bad config or usage.
# Python: $PYTHON if set, else the config's "python" value looked up on PATH.
set -uo pipefail

usage() {
    echo "usage: bash $0 CONFIG MODE" >&2
    exit 2
}

(( $# == 2 )) || usage
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The config may be given relative to the caller's directory; everything else is
# relative to the repository root, as in the config's commands.
CONFIG=$(realpath -m -- "$1")
MODE=$2
cd "$REPO_ROOT" || exit 2
# shellcheck source=test_tipc/common_func.sh
source test_tipc/common_func.sh

load_config "$CONFIG"
validate_config "$MODE"
resolve_python
OUTPUT_DIR=${TIPC_OUTPUT_DIR:-test_tipc/output}
# tools/predict.py and infer.py must agree on this image's class (the consistency check).
CHECK_IMAGE=images/demo.jpg
PROB_TOLERANCE=1e-4
INFERENCE_SCRIPT=$(config_value "$L_INFERENCE")
INFER_LOGS=()  # logs of the successful inference runs on the current model to compare
UNCOMPARED_RUNS=0  # inference runs on it at a reduced precision

# append_param ARRAY KEY VALUE: add "KEY=VALUE" to ARRAY unless the key or value is null.
append_param() {
    local -n _params=$1
    local param
    param=$(set_param "$2" "$3")
    if [[ -n "$param" ]]; then
        _params+=("$param")
    fi
}

# Empty the output directory; refuse directories whose loss would hurt.
prepare_output_dir() {
    local resolved
    resolved=$(realpath -m -- "$OUTPUT_DIR")
    case "$resolved" in
        / | "$REPO_ROOT" | "${HOME:-/}")
            echo "error: refusing to use '${OUTPUT_DIR}' as the output directory (it is emptied)" >&2
            exit 2
            ;;
    esac
    rm -rf -- "$OUTPUT_DIR"
    mkdir -p -- "$OUTPUT_DIR"
    TIPC_STATUS_LOG="$OUTPUT_DIR/results_python.log"
    : > "$TIPC_STATUS_LOG"
}

# The device flag's value in the config's own vocabulary (gpu/cpu or True/False).
device_flag_value() {
    local device=$1 device_value=$2
    if [[ "$device_value" == "True" || "$device_value" == "False" ]]; then
        [[ "$device" == "gpu" ]] && echo True || echo False
    else
        echo "$device"
    fi
}

# run_infer LOG DEVICE PRECISION CMD...: one inference run. Runs whose results are
# comparable with tools/predict.py (consistency_env) run in the environment that keeps
# them so, and their logs go to INFER_LOGS when they succeed.
run_infer() {
    local log_file=$1 device=$2 precision=$3 check_env
    shift 3
    if check_env=$(consistency_env "$device" "$precision"); then
        if [[ -n "$check_env" ]]; then
            set -- env "$check_env" "$@"
        fi
        run_logged "$log_file" "$@" && INFER_LOGS+=("$log_file")
    else
        run_logged "$log_file" "$@"
        UNCOMPARED_RUNS=$((UNCOMPARED_RUNS + 1))
    fi
}

# Inference matrix over the config's value lists for one exported model; logs go to
# LOG_DIR. Fills INFER_LOGS with the logs of the runs that succeeded.
run_inference() {
    local model_dir=$1 log_dir=$2 img_path=$3
    local use_gpu use_mkldnn threads batch precision use_trt log_file
    local -a use_gpu_list mkldnn_list threads_list batch_list precision_list trt_list common cmd
    local use_gpu_key mkldnn_key threads_key batch_key precision_key trt_key
    IFS='|' read -ra use_gpu_list <<< "$(config_value "$L_USE_GPU")"
    IFS='|' read -ra mkldnn_list <<< "$(config_value "$L_USE_MKLDNN")"
    IFS='|' read -ra threads_list <<< "$(config_value "$L_CPU_THREADS")"
    IFS='|' read -ra batch_list <<< "$(config_value "$L_INFER_BATCH")"
    IFS='|' read -ra precision_list <<< "$(config_value "$L_PRECISION")"
    IFS='|' read -ra trt_list <<< "$(config_value "$L_USE_TRT")"
    use_gpu_key=$(config_key "$L_USE_GPU")
    mkldnn_key=$(config_key "$L_USE_MKLDNN")
    threads_key=$(config_key "$L_CPU_THREADS")
    batch_key=$(config_key "$L_INFER_BATCH")
    precision_key=$(config_key "$L_PRECISION")
    trt_key=$(config_key "$L_USE_TRT")

    model_dir=$(inference_model_dir "$model_dir")
    # Flags every run shares; the matrix flags come first, as in PaddleClas's commands.
    common=()
    append_param common "$(config_key "$L_MODEL_DIR")" "$model_dir"
    append_param common "$(config_key "$L_IMG_PATH")" "$img_path"
    append_param common "$(config_key "$L_BENCHMARK")" "$(config_mode_value "$L_BENCHMARK" "$MODE")"
    append_param common "$(config_key "$L_SAVE_LOG")" "$(config_mode_value "$L_SAVE_LOG" "$MODE")"
    append_param common "$(config_key "$L_INFER_PARAM1")" "$(config_mode_value "$L_INFER_PARAM1" "$MODE")"

    INFER_LOGS=()
    UNCOMPARED_RUNS=0
    for use_gpu in "${use_gpu_list[@]}"; do
        if [[ "$use_gpu" == "True" || "$use_gpu" == "gpu" ]]; then
            if (( NUM_GPUS == 0 )); then
                echo "note: skipping the ${use_gpu_key}=${use_gpu} inference runs: no GPU on this machine"
                continue
            fi
            for use_trt in "${trt_list[@]}"; do
                for precision in "${precision_list[@]}"; do
                    # Half and int8 precision need TensorRT in infer.py; bf16 is CPU-only.
                    if ! is_null "$precision" && [[ "$precision" != "fp32" && "$use_trt" != "True" ]]; then
                        continue
                    fi
                    for batch in "${batch_list[@]}"; do
                        log_file="$log_dir/python_infer_gpu_usetrt_${use_trt}_precision_${precision}_batchsize_${batch}.log"
                        cmd=("$PYTHON_BIN" "$INFERENCE_SCRIPT" "${use_gpu_key}=${use_gpu}")
                        append_param cmd "$trt_key" "$use_trt"
                        append_param cmd "$precision_key" "$precision"
                        append_param cmd "$batch_key" "$batch"
                        run_infer "$log_file" gpu "$precision" "${cmd[@]}" "${common[@]}"
                    done
                done
            done
        else
            for use_mkldnn in "${mkldnn_list[@]}"; do
                for threads in "${threads_list[@]}"; do
                    for batch in "${batch_list[@]}"; do
                        for precision in "${precision_list[@]}"; do
                            log_file="$log_dir/python_infer_cpu_usemkldnn_${use_mkldnn}_threads_${threads}_precision_${precision}_batchsize_${batch}.log"
                            cmd=("$PYTHON_BIN" "$INFERENCE_SCRIPT" "${use_gpu_key}=${use_gpu}")
                            append_param cmd "$mkldnn_key" "$use_mkldnn"
                            append_param cmd "$threads_key" "$threads"
                            append_param cmd "$batch_key" "$batch"
                            append_param cmd "$precision_key" "$precision"
                            run_infer "$log_file" cpu "$precision" "${cmd[@]}" "${common[@]}"
                        done
                    done
                done
            done
        fi
    done
    if (( UNCOMPARED_RUNS > 0 )); then
        echo "note: ${UNCOMPARED_RUNS} inference run(s) at a reduced precision are not compared with tools/predict.py"
    fi
}

# "class_id prob" as infer.py printed them for CHECK_IMAGE in LOG (nothing if absent).
infer_prediction() {
    awk -v want="${CHECK_IMAGE#./}" '
        $1 == "image_name:" {
            name = $2; sub(/,$/, "", name); sub(/^\.\//, "", name)
            if (name == want) { id = $4; prob = $6; sub(/,$/, "", id); sub(/,$/, "", prob); print id, prob; exit }
        }' "$1"
}

# True when two "class_id prob" pairs name the same class with probabilities within
# PROB_TOLERANCE: a barely trained lite model is near-uniform, so the class alone
# would hardly tell two engines apart.
same_prediction() {
    awk -v a="$1" -v b="$2" -v tol="$PROB_TOLERANCE" 'BEGIN {
        split(a, x, " "); split(b, y, " ")
        d = x[2] - y[2]; if (d < 0) d = -d
        exit !(x[1] != "" && x[1] == y[1] && d <= tol)
    }'
}

# tools/predict.py on WEIGHTS (training engine) and infer.py on the exported model must
# give CHECK_IMAGE the same class and probability. Compared with every inference log
# that classified CHECK_IMAGE; if none did (the config infers other images), infer.py
# runs on it once.
check_consistency() {
    local weights=$1 model_dir=$2 log_dir=$3
    local predict_log="$log_dir/predict.log" expected got log_file description
    local -a compared=() mismatched=() cmd
    run_logged "$predict_log" "$PYTHON_BIN" tools/predict.py "--pretrained=$weights" \
        "--img-path=$CHECK_IMAGE" --device=cpu || return
    expected=$(sed -n 's/^class_id: \([0-9][0-9]*\), prob: \([^,]*\).*/\1 \2/p' "$predict_log" | head -n 1)

    for log_file in "${INFER_LOGS[@]}"; do
        [[ -n "$(infer_prediction "$log_file")" ]] && compared+=("$log_file")
    done
    if (( ${#compared[@]} == 0 )); then
        log_file="$log_dir/python_infer_check_image.log"
        cmd=("$PYTHON_BIN" "$INFERENCE_SCRIPT" "$(config_key "$L_USE_GPU")=False")
        append_param cmd "$(config_key "$L_MODEL_DIR")" "$model_dir"
        append_param cmd "$(config_key "$L_IMG_PATH")" "$CHECK_IMAGE"
        run_logged "$log_file" "${cmd[@]}" || return
        compared=("$log_file")
    fi

    for log_file in "${compared[@]}"; do
        got=$(infer_prediction "$log_file")
        same_prediction "$expected" "$got" || mismatched+=("${log_file} gave '${got:-nothing}'")
    done
    description="consistency check: class_id and prob (+-${PROB_TOLERANCE}) of ${CHECK_IMAGE} from tools/predict.py ('${expected:-nothing}', ${predict_log}) == ${INFERENCE_SCRIPT}'s in ${#compared[@]} inference log(s)"
    if (( ${#mismatched[@]} > 0 )); then
        description+="; differs: $(printf '%s; ' "${mismatched[@]}")"
        status_check 1 "${description%; }"
    else
        status_check 0 "$description"
    fi
}

# Export WEIGHTS with the export command on line EXPORT_INDEX into DIR.
export_model() {
    local export_index=$1 weights=$2 dir=$3 log_file=$4
    local -a cmd
    read -ra cmd <<< "$(config_value "$export_index")"
    cmd=("$PYTHON_BIN" "${cmd[@]}")
    append_param cmd "$(config_key "$L_EXPORT_WEIGHT")" "$weights"
    append_param cmd "$(config_key "$L_SAVE_INFER_DIR")" "$dir"
    run_logged "$log_file" "${cmd[@]}"
}

# One training for a gpu_list entry, AMP setting and trainer, then its eval, export,
# inference and consistency check.
train_eval_export_infer() {
    local gpu=$1 device_value=$2 autocast=$3 trainer=$4
    local train_index device reason num_cards save_dir weights img_path device_key launch_words
    local -a launcher single cmd params
    train_index=$(trainer_line "$trainer")
    read -r device reason <<< "$(entry_device "$gpu" "$device_value" "$NUM_GPUS")"
    device_key=$(config_key "$L_DEVICE")
    num_cards=$(awk -F, '{print NF}' <<< "$gpu")
    save_dir="$OUTPUT_DIR/${trainer}_gpus_${gpu}_autocast_${autocast}"

    # One process per card; on the CPU a multi-card entry still starts one (gloo)
    # process per card so that the distributed path is exercised.
    if ! launch_words=$(entry_launcher "$device" "$gpu" "$NUM_GPUS" "$num_cards" "$save_dir/dist_logs"); then
        echo "note: skipping gpu_list entry ${gpu}: ${reason:+${reason}; on the CPU, }${launch_words}"
        return
    fi
    if [[ -n "$reason" ]]; then
        echo "note: gpu_list entry ${gpu} runs on the CPU (${num_cards} process(es)): ${reason}"
    fi
    mapfile -t launcher <<< "$launch_words"
    mapfile -t single < <(entry_launcher "$device" "$gpu" "$NUM_GPUS" 1)

    params=()
    append_param params "$device_key" "$(device_flag_value "$device" "$device_value")"
    append_param params "$(config_key "$L_OUTPUT_DIR")" "$save_dir"
    append_param params "$(config_key "$L_EPOCHS")" "$(config_mode_value "$L_EPOCHS" "$MODE")"
    append_param params "$(config_key "$L_PRETRAINED")" "$(config_mode_value "$L_PRETRAINED" "$MODE")"
    append_param params "$(config_key "$L_TRAIN_BATCH")" "$(config_mode_value "$L_TRAIN_BATCH" "$MODE")"
    append_param params "$(config_key "$L_TRAIN_PARAM1")" "$(config_mode_value "$L_TRAIN_PARAM1" "$MODE")"
    # AMP is a switch in train.py: any value but null/False/fp32 turns it on.
    case "$autocast" in
        null | False | fp32) ;;
        *) params+=("$(config_key "$L_AUTOCAST")") ;;
    esac
    read -ra cmd <<< "$(config_value "$train_index")"
    if ! run_logged "$save_dir/train.log" "${launcher[@]}" "${cmd[@]}" "${params[@]}"; then
        echo "note: skipping eval, export and inference of ${save_dir}: its training failed"
        return
    fi
    weights="$save_dir/$(config_value "$L_TRAIN_MODEL_NAME")"

    if ! is_null "$(config_value "$L_EVAL")"; then
        read -ra cmd <<< "$(config_value "$L_EVAL")"
        cmd=("${single[@]}" "${cmd[@]}")
        append_param cmd "$(config_key "$L_PRETRAINED")" "$weights"
        append_param cmd "$device_key" "$(device_flag_value "$device" "$device_value")"
        append_param cmd "$(config_key "$L_OUTPUT_DIR")" "$save_dir/eval"
        append_param cmd "$(config_key "$L_EVAL_PARAM1")" "$(config_mode_value "$L_EVAL_PARAM1" "$MODE")"
        run_logged "$save_dir/eval.log" "${cmd[@]}"
    fi

    is_null "$(config_value "$(export_line "$train_index")")" && return
    export_model "$(export_line "$train_index")" "$weights" "$save_dir/inference" "$save_dir/export.log" || return
    img_path=$(config_mode_value "$L_TRAIN_INFER_IMG" "$MODE")
    [[ -n "$img_path" ]] || img_path=$(config_mode_value "$L_IMG_PATH" "$MODE")
    run_inference "$save_dir/inference" "$save_dir" "$img_path"
    check_consistency "$weights" "$save_dir/inference" "$save_dir"
}

run_train_modes() {
    local index gpu device_value autocast trainer
    local -a gpus device_values autocasts trainers
    IFS='|' read -ra gpus <<< "$(config_value "$L_GPU_LIST")"
    IFS='|' read -ra device_values <<< "$(config_value "$L_DEVICE")"
    IFS='|' read -ra autocasts <<< "$(config_value "$L_AUTOCAST")"
    IFS='|' read -ra trainers <<< "$(config_value "$L_TRAINER_LIST")"
    for index in "${!gpus[@]}"; do
        gpu=${gpus[index]}
        # One --device value per gpu_list entry (PaddleClas); a single value covers all.
        device_value=${device_values[index]:-${device_values[0]:-gpu}}
        for autocast in "${autocasts[@]}"; do
            for trainer in "${trainers[@]}"; do
                train_eval_export_infer "$gpu" "$device_value" "$autocast" "$trainer"
            done
        done
    done
}

# whole_infer: export the given weights (infer_model) and run the inference matrix on
# them; with infer_export null/False, infer_model is already an exported directory.
run_whole_infer() {
    local weights infer_export model_dir export_index
    weights=$(config_mode_value "$L_INFER_MODEL" "$MODE")
    infer_export=$(config_value "$L_INFER_EXPORT")
    if is_null "$infer_export" || [[ "$infer_export" == "False" ]]; then
        model_dir=$weights
    else
        [[ -e "$weights" ]] || echo "note: ${weights} does not exist; run test_tipc/prepare.sh CONFIG whole_infer first" >&2
        # "True" (PaddleClas) means: export with norm_export.
        export_index=$L_INFER_EXPORT
        [[ "$infer_export" == "True" ]] && export_index=$L_NORM_EXPORT
        model_dir="$OUTPUT_DIR/inference"
        export_model "$export_index" "$weights" "$model_dir" "$OUTPUT_DIR/export.log" || return
    fi
    run_inference "$model_dir" "$OUTPUT_DIR" "$(config_mode_value "$L_IMG_PATH" "$MODE")"
    if [[ -f "$weights" ]]; then
        check_consistency "$weights" "$model_dir" "$OUTPUT_DIR"
    else
        echo "note: no consistency check: ${weights} is an exported model, not training weights"
    fi
}

main() {
    prepare_output_dir
    NUM_GPUS=$(visible_gpu_count)
    if [[ "$MODE" == "whole_infer" ]]; then
        run_whole_infer
    else
        run_train_modes
    fi
    print_summary
}

main
