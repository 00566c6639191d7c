# Shared by test_tipc/prepare.sh and test_tipc/test_train_inference_python.sh:
# reading a TIPC config, validating it, and running + logging commands.
# Sourced, not executed. The config format is described in docs/tipc.md.

TIPC_MODES=(lite_train_lite_infer lite_train_whole_infer whole_infer whole_train_whole_infer)

# Line indices (0-based, as in PaddleClas's scripts; error messages print 1-based line
# numbers). A config has exactly TIPC_NUM_LINES lines.
TIPC_NUM_LINES=51
readonly L_TRAIN_HEADER=0 L_MODEL_NAME=1 L_PYTHON=2 L_GPU_LIST=3 L_DEVICE=4 L_AUTOCAST=5 L_EPOCHS=6
readonly L_OUTPUT_DIR=7 L_TRAIN_BATCH=8 L_PRETRAINED=9 L_TRAIN_MODEL_NAME=10 L_TRAIN_INFER_IMG=11
readonly L_TRAIN_PARAM1=12 L_TRAINER_LIST=14 L_NORM_TRAIN=15 L_PACT_TRAIN=16 L_FPGM_TRAIN=17
readonly L_DISTILL_TRAIN=18 L_TRAINER_KEY1=19 L_TRAINER_KEY2=20
readonly L_EVAL_HEADER=22 L_EVAL=23 L_EVAL_PARAM1=24
readonly L_INFER_HEADER=26 L_SAVE_INFER_DIR=27 L_EXPORT_WEIGHT=28 L_NORM_EXPORT=29 L_QUANT_EXPORT=30
readonly L_FPGM_EXPORT=31 L_DISTILL_EXPORT=32 L_EXPORT1=33 L_EXPORT2=34 L_INFERENCE_DIR=35
readonly L_INFER_MODEL=36 L_INFER_EXPORT=37 L_INFER_QUANT=38 L_INFERENCE=39 L_USE_GPU=40
readonly L_USE_MKLDNN=41 L_CPU_THREADS=42 L_INFER_BATCH=43 L_USE_TRT=44 L_PRECISION=45
readonly L_MODEL_DIR=46 L_IMG_PATH=47 L_SAVE_LOG=48 L_BENCHMARK=49 L_INFER_PARAM1=50

readonly SEPARATOR_LINES=(13 21 25)
# Lines whose value may be a list of mode=value pairs (the others are used as written).
readonly MODE_VALUE_LINES=($L_EPOCHS $L_TRAIN_BATCH $L_PRETRAINED $L_TRAIN_INFER_IMG $L_TRAIN_PARAM1
    $L_EVAL_PARAM1 $L_INFER_MODEL $L_IMG_PATH $L_SAVE_LOG $L_BENCHMARK $L_INFER_PARAM1)
# Lines whose value is a command: "script [args]"; the script must exist.
readonly COMMAND_LINES=($L_NORM_TRAIN $L_PACT_TRAIN $L_FPGM_TRAIN $L_DISTILL_TRAIN $L_TRAINER_KEY1
    $L_TRAINER_KEY2 $L_EVAL $L_NORM_EXPORT $L_QUANT_EXPORT $L_FPGM_EXPORT $L_DISTILL_EXPORT $L_INFER_EXPORT
    $L_INFERENCE)

TIPC_CONFIG=""
TIPC_LINES=()

# Fail validation: name the line (1-based) and its content, exit 2.
config_error() {
    local index=$1 message=$2
    echo "error: ${TIPC_CONFIG}:$((index + 1)): ${message}: '${TIPC_LINES[index]-}'" >&2
    exit 2
}

is_known_mode() {
    local mode
    for mode in "${TIPC_MODES[@]}"; do
        [[ "$1" == "$mode" ]] && return 0
    done
    return 1
}

# Read CONFIG into TIPC_LINES (CRLF files are accepted).
load_config() {
    TIPC_CONFIG=$1
    if [[ ! -f "$TIPC_CONFIG" || ! -r "$TIPC_CONFIG" ]]; then
        echo "error: config file '${TIPC_CONFIG}' not found or not readable" >&2
        exit 2
    fi
    mapfile -t TIPC_LINES < "$TIPC_CONFIG"
    TIPC_LINES=("${TIPC_LINES[@]%$'\r'}")
}

# The key of line INDEX: everything before the first ':'.
config_key() {
    printf '%s' "${TIPC_LINES[$1]%%:*}"
}

# The raw value of line INDEX: everything after the first ':'.
config_value() {
    printf '%s' "${TIPC_LINES[$1]#*:}"
}

# True when VALUE is a list of mode=value pairs (every alternative starts "<mode>=").
is_mode_list() {
    [[ "$1" =~ ^[a-z][a-z_]*= ]]
}

# The value of line INDEX for MODE: a mode=value list yields the entry for MODE, or
# nothing when MODE has no entry (the flag is then left out); other values as they are.
config_mode_value() {
    local index=$1 mode=$2 value pair
    local -a pairs
    value=$(config_value "$index")
    if ! is_mode_list "$value"; then
        printf '%s' "$value"
        return
    fi
    IFS='|' read -ra pairs <<< "$value"
    for pair in "${pairs[@]}"; do
        if [[ "${pair%%=*}" == "$mode" ]]; then
            printf '%s' "${pair#*=}"
            return
        fi
    done
}

# "key=value" for a command line, or nothing when the key or the value is null/empty.
set_param() {
    local key=$1 value=$2
    if [[ -n "$key" && "$key" != "null" && -n "$value" && "$value" != "null" ]]; then
        printf '%s=%s' "$key" "$value"
    fi
}

is_null() {
    [[ -z "$1" || "$1" == "null" ]]
}

# Check the whole config before anything runs, so that a typo costs seconds, not a
# training. Exits 2 naming the first bad line.
validate_config() {
    local mode=$1 index line key value header_index expected alt pair script
    local -a pairs alts
    local empty_alternative='(^\||\|\||\|$)'
    if ! is_known_mode "$mode"; then
        echo "error: unknown mode '${mode}'; expected one of: ${TIPC_MODES[*]}" >&2
        exit 2
    fi
    if (( ${#TIPC_LINES[@]} < TIPC_NUM_LINES )); then
        echo "error: ${TIPC_CONFIG}: ${#TIPC_LINES[@]} lines, expected ${TIPC_NUM_LINES} (see docs/tipc.md)" >&2
        exit 2
    fi
    for header_index in "$L_TRAIN_HEADER:train_params" "$L_EVAL_HEADER:eval_params" "$L_INFER_HEADER:infer_params"; do
        index=${header_index%%:*}
        expected="===========================${header_index#*:}==========================="
        [[ "${TIPC_LINES[index]}" == "$expected" ]] || config_error "$index" "expected the section header '${expected}'"
    done
    for index in "${SEPARATOR_LINES[@]}"; do
        [[ "${TIPC_LINES[index]}" == "##" ]] || config_error "$index" "expected the separator '##'"
    done
    for (( index = TIPC_NUM_LINES; index < ${#TIPC_LINES[@]}; index++ )); do
        [[ -z "${TIPC_LINES[index]//[[:space:]]/}" ]] || config_error "$index" "unexpected line after the last parameter"
    done

    for (( index = 0; index < TIPC_NUM_LINES; index++ )); do
        line=${TIPC_LINES[index]}
        [[ "$line" == "##" || "$line" == ===========================* ]] && continue
        [[ "$line" =~ ^[^:[:space:]][^:]*:.*$ ]] || config_error "$index" "malformed line, expected key:value"
        value=$(config_value "$index")
        # "a||b", "|a" or "a|" are typos, not alternatives.
        [[ "$value" =~ $empty_alternative ]] && config_error "$index" "empty alternative in a '|' list"
        if is_mode_list "$value"; then
            [[ " ${MODE_VALUE_LINES[*]} " == *" $index "* ]] \
                || config_error "$index" "mode=value pairs are not read on this line"
            IFS='|' read -ra pairs <<< "$value"
            for pair in "${pairs[@]}"; do
                [[ "$pair" == *=* ]] && is_known_mode "${pair%%=*}" \
                    || config_error "$index" "'${pair}' is not <mode>=<value> with a known mode"
            done
        fi
    done

    # Fixed keys catch a config whose lines are shifted by one.
    for pair in "$L_MODEL_NAME:model_name" "$L_PYTHON:python" "$L_GPU_LIST:gpu_list" \
        "$L_TRAIN_MODEL_NAME:train_model_name" "$L_TRAINER_LIST:trainer" "$L_NORM_TRAIN:norm_train" \
        "$L_EVAL:eval" "$L_NORM_EXPORT:norm_export" "$L_INFER_EXPORT:infer_export" "$L_INFER_QUANT:infer_quant" \
        "$L_INFERENCE:inference"; do
        index=${pair%%:*}
        [[ "$(config_key "$index")" == "${pair#*:}" ]] || config_error "$index" "expected the key '${pair#*:}'"
    done
    # Two lines the reference's scripts read by value only, as PaddleClas's configs
    # write them: line 12 may be a null:null filler (no image flag after training), and
    # line 36 may be a '##' (the model is the exported directory itself).
    [[ "$(config_key "$L_TRAIN_INFER_IMG")" == "train_infer_img_dir" || "${TIPC_LINES[L_TRAIN_INFER_IMG]}" == "null:null" ]] \
        || config_error "$L_TRAIN_INFER_IMG" "expected the key 'train_infer_img_dir' (or null:null)"
    [[ "$(config_key "$L_INFERENCE_DIR")" == "inference_dir" || "${TIPC_LINES[L_INFERENCE_DIR]}" == "##" ]] \
        || config_error "$L_INFERENCE_DIR" "expected the key 'inference_dir' (or '##')"
    key=$(config_key "$L_INFER_MODEL")
    [[ "$key" == "infer_model" || "$key" == "train_model" ]] \
        || config_error "$L_INFER_MODEL" "expected the key 'infer_model'"
    if [[ "$mode" == "whole_infer" ]] && is_null "$(config_mode_value "$L_INFER_MODEL" "$mode")"; then
        config_error "$L_INFER_MODEL" "whole_infer needs weights or an exported model here"
    fi
    case "$(config_value "$L_INFER_QUANT")" in
        False | null) ;;
        *) config_error "$L_INFER_QUANT" "quantized inference models are not supported, expected False" ;;
    esac

    IFS='|' read -ra alts <<< "$(config_value "$L_TRAINER_LIST")"
    for alt in "${alts[@]}"; do
        trainer_line "$alt" > /dev/null || config_error "$L_TRAINER_LIST" "unknown trainer '${alt}'"
        is_null "$(config_value "$(trainer_line "$alt")")" \
            && config_error "$(trainer_line "$alt")" "trainer '${alt}' is listed on line $((L_TRAINER_LIST + 1)) but has no command"
    done
    IFS='|' read -ra alts <<< "$(config_value "$L_GPU_LIST")"
    for alt in "${alts[@]}"; do
        [[ "$alt" =~ ^(-1|[0-9]+(,[0-9]+)*)$ ]] || config_error "$L_GPU_LIST" "gpu_list entry '${alt}' is not -1 or card ids like 0,1"
    done

    IFS='|' read -ra alts <<< "$(config_value "$L_USE_GPU")"
    for alt in "${alts[@]}"; do
        [[ "$alt" =~ ^(True|False|gpu|cpu)$ ]] || config_error "$L_USE_GPU" "'${alt}' is not True, False, gpu or cpu"
    done

    for index in "${COMMAND_LINES[@]}"; do
        value=$(config_value "$index")
        # infer_export may also be a PaddleClas-style True/False flag.
        [[ "$value" == "True" || "$value" == "False" ]] && (( index == L_INFER_EXPORT )) && continue
        is_null "$value" && continue
        read -r script _ <<< "$value"
        [[ -f "$script" ]] || config_error "$index" "script '${script}' not found (paths are relative to the repository root)"
    done
}

# The config line index holding the command of TRAINER (norm_train, pact_train, ...,
# or the key of one of the two spare trainer lines); fails for an unknown trainer.
trainer_line() {
    local index
    for index in $L_NORM_TRAIN $L_PACT_TRAIN $L_FPGM_TRAIN $L_DISTILL_TRAIN $L_TRAINER_KEY1 $L_TRAINER_KEY2; do
        if [[ "$1" != "null" && "$(config_key "$index")" == "$1" ]]; then
            echo "$index"
            return 0
        fi
    done
    return 1
}

# The matching export command's line for TRAINER's line (quant_export for pact_train, ...).
export_line() {
    case "$1" in
        "$L_PACT_TRAIN") echo "$L_QUANT_EXPORT" ;;
        "$L_FPGM_TRAIN") echo "$L_FPGM_EXPORT" ;;
        "$L_DISTILL_TRAIN") echo "$L_DISTILL_EXPORT" ;;
        "$L_TRAINER_KEY1") echo "$L_EXPORT1" ;;
        "$L_TRAINER_KEY2") echo "$L_EXPORT2" ;;
        *) echo "$L_NORM_EXPORT" ;;
    esac
}

# The exported model's directory inside DIR: DIR itself when line 36 is null or '##'.
inference_model_dir() {
    local dir=$1 subdir
    subdir=$(config_value "$L_INFERENCE_DIR")
    if is_null "$subdir" || [[ "$subdir" == "##" ]]; then
        printf '%s' "$dir"
    else
        printf '%s' "$dir/$subdir"
    fi
}

# Set PYTHON_BIN: $PYTHON if set, else the config's python (line 3); it must be a
# command, or every step would fail with the same "not found".
resolve_python() {
    PYTHON_BIN=${PYTHON:-$(config_value "$L_PYTHON")}
    command -v -- "$PYTHON_BIN" > /dev/null && return
    if [[ -n "${PYTHON-}" ]]; then
        echo "error: PYTHON='${PYTHON}' is not a command" >&2
        exit 2
    fi
    config_error "$L_PYTHON" "'${PYTHON_BIN}' is not a command here; set PYTHON to the interpreter to use"
}

# --- devices: each decision is a function of its inputs, tested on CPU -----------------

# How many GPUs Paddle sees here (0 for a CPU build).
visible_gpu_count() {
    local count
    count=$("$PYTHON_BIN" -c 'import paddle; print(paddle.device.cuda.device_count() if paddle.is_compiled_with_cuda() else 0)' 2> /dev/null)
    [[ "$count" =~ ^[0-9]+$ ]] && echo "$count" || echo 0
}

# Where gpu_list entry ENTRY trains, given its --device value and the number of visible
# GPUs: "gpu", or "cpu" followed by the reason when the config asked for GPUs this
# machine does not have (-1 and a cpu/False --device value are the CPU as asked).
entry_device() {
    local entry=$1 device_value=$2 num_gpus=$3 card
    local -a cards
    if [[ "$entry" == "-1" || "$device_value" == "cpu" || "$device_value" == "False" ]]; then
        echo cpu
        return
    fi
    if (( num_gpus == 0 )); then
        echo "cpu no GPU on this machine"
        return
    fi
    IFS=',' read -ra cards <<< "$entry"
    for card in "${cards[@]}"; do
        if (( 10#$card >= num_gpus )); then
            echo "cpu card ${card} is not one of the ${num_gpus} visible GPU(s)"
            return
        fi
    done
    echo gpu
}

# The cards of gpu_list entry ENTRY as CUDA names them here: an entry counts the visible
# GPUs from 0 (as Paddle's device count and entry_device do), so with an inherited
# CUDA_VISIBLE_DEVICES=2,3 entry 0,1 is 2,3 and entry 1 is 3; without a mask, the entry
# itself. paddle.distributed.launch reads --gpus as names within CUDA_VISIBLE_DEVICES
# (launch/context/device.py, get_selected_devices: labels.index(card)), and a
# single-card run narrows CUDA_VISIBLE_DEVICES to one of them.
entry_cards() {
    local entry=$1 index mask=${CUDA_VISIBLE_DEVICES-} mapped=()
    local -a indices labels
    IFS=',' read -ra indices <<< "$entry"
    if [[ -z "$mask" || "$mask" == all ]]; then
        printf '%s' "$entry"
        return
    fi
    IFS=',' read -ra labels <<< "$mask"
    for index in "${indices[@]}"; do
        mapped+=("${labels[10#$index]}")
    done
    (IFS=','; printf '%s' "${mapped[*]}")
}

# The words that start PROCESSES processes for ENTRY on DEVICE (as entry_device gave
# it), one per line; PROCESSES is 1 for evaluation, else the entry's card count. Fails,
# saying why, when the processes cannot be started here: paddle.distributed.launch gives
# each process one of the visible GPUs whenever there are any (its Device.parse_device
# and detect_device), and indexes them by rank, so it cannot start more processes than
# there are GPUs. CPU processes beside GPUs then join over gloo: train.py asks for it
# for --device cpu (paddlevision.device.distributed_backend).
entry_launcher() {
    local device=$1 entry=$2 num_gpus=$3 processes=$4 log_dir=${5-} cards
    cards=$(entry_cards "$entry")
    if (( processes == 1 )); then
        if [[ "$device" == "gpu" ]]; then
            printf '%s\n' env "CUDA_VISIBLE_DEVICES=${cards%%,*}"
        fi
        printf '%s\n' "$PYTHON_BIN"
    elif [[ "$device" == "gpu" ]]; then
        printf '%s\n' "$PYTHON_BIN" -m paddle.distributed.launch --gpus "$cards" --log_dir "$log_dir"
    elif (( num_gpus == 0 || num_gpus >= processes )); then
        printf '%s\n' "$PYTHON_BIN" -m paddle.distributed.launch --nproc_per_node "$processes" --log_dir "$log_dir"
    else
        echo "paddle.distributed.launch would give each of its ${processes} processes one of the ${num_gpus} visible GPU(s)"
        return 1
    fi
}

# Whether an inference run on DEVICE at PRECISION is compared with tools/predict.py at
# PROB_TOLERANCE, and the environment it then runs with. Fails for reduced precisions
# (fp16/int8/bf16 differ from fp32 by design). On GPU, prints NVIDIA_TF32_OVERRIDE=0:
# Paddle leaves TF32 on for cuBLAS and cuDNN (phi's allow_tf32_cublas/allow_tf32_cudnn
# default to true, switched only in-process by core.set_cublas_switch/set_cudnn_switch),
# and TF32's 10-bit mantissa can move a probability by more than 1e-4; the NVIDIA
# libraries themselves read this variable and then compute in full fp32.
consistency_env() {
    local device=$1 precision=$2
    is_null "$precision" || [[ "$precision" == "fp32" ]] || return 1
    if [[ "$device" == "gpu" ]]; then
        echo NVIDIA_TF32_OVERRIDE=0
    fi
    return 0
}

# --- running and logging ------------------------------------------------------------

TIPC_STATUS_LOG=""
TIPC_SUCCEEDED=0
TIPC_FAILED=0

# Record the outcome of one command on stdout and in the status log.
status_check() {
    local rc=$1 command=$2 log_file=${3-} line
    if (( rc == 0 )); then
        line="Run successfully with command - ${command}!"
        TIPC_SUCCEEDED=$((TIPC_SUCCEEDED + 1))
    else
        line="Run failed with command - ${command}!"
        TIPC_FAILED=$((TIPC_FAILED + 1))
    fi
    echo "$line"
    echo "$line" >> "$TIPC_STATUS_LOG"
    # The failing command's own output is in its log; show its end right away.
    if (( rc != 0 )) && [[ -n "$log_file" && -s "$log_file" ]]; then
        echo "---- last lines of ${log_file} (exit status ${rc}) ----" >&2
        tail -n 15 "$log_file" >&2
    fi
}

# The command as a copy-pasteable shell line; only words that need it are quoted, so
# the usual line reads like the command one would type.
quote_command() {
    local word line="" plain='^[A-Za-z0-9_./,:=+@%-]+$'
    for word in "$@"; do
        if [[ "$word" =~ $plain ]]; then
            line+="$word "
        else
            line+="$(printf '%q' "$word") "
        fi
    done
    printf '%s' "${line% }"
}

# run_logged LOG CMD...: run CMD (no shell evaluation of the config's text) with its
# output in LOG, and record the outcome. Returns CMD's exit status.
run_logged() {
    local log_file=$1 rc=0
    shift
    mkdir -p "$(dirname "$log_file")"
    "$@" > "$log_file" 2>&1 || rc=$?
    status_check "$rc" "$(quote_command "$@") > ${log_file} 2>&1" "$log_file"
    return "$rc"
}

# Final line on stdout and in the status log; exit status 1 if anything failed.
print_summary() {
    local line="${TIPC_SUCCEEDED} succeeded, ${TIPC_FAILED} failed"
    echo "$line"
    echo "$line" >> "$TIPC_STATUS_LOG"
    (( TIPC_FAILED == 0 ))
}
