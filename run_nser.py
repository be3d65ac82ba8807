#!/usr/bin/env python
"""Train and evaluate noise-robust speech emotion recognition from Whisper representations.

    accelerate launch run_nser.py --model_name_or_path openai/whisper-base --dataset_name data/casia \\
        --noise_dir noise/ --output_dir outputs/nser-casia --num_train_epochs 10 ...
    python run_nser.py config.json        # or config.yaml: the same arguments as a file

Writes the trained model (`<output_dir>/model`: weights, remote code, feature extractor, model card, Inference
Endpoints handler) and the report (`<output_dir>/report`: results.json, results.md, f1_vs_snr.png,
layer_weights.png) with UA, WA, macro-F1 and weighted F1 on clean speech and on every noise type x SNR.
"""

import logging
import shlex
import sys
from pathlib import Path

import datasets
import transformers
from transformers import AutoTokenizer, HfArgumentParser, set_seed

from nser.arguments import DataArguments, ModelArguments, NoiseArguments, NserTrainingArguments, RunArguments
from nser.experiment import run_experiment
from nser.hub import add_inference_handler, check_push_possible, push_model_folder
from nser.model_card import benchmark_markdown, render_model_card
from nser.model_folder import finalize_model_folder
from nser.preflight import preflight
from nser.report import write_report
from nser.resume import saving_outputs

logger = logging.getLogger("run_nser")

ARGUMENT_CLASSES = (ModelArguments, DataArguments, NoiseArguments, NserTrainingArguments, RunArguments)


def parse_arguments(argv=None):
    """Command-line flags, or a single .json / .yaml file holding them (transformers' example convention)."""
    argv = sys.argv[1:] if argv is None else argv
    parser = HfArgumentParser(ARGUMENT_CLASSES)
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(json_file=str(Path(argv[0]).resolve()))
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        return parser.parse_yaml_file(yaml_file=str(Path(argv[0]).resolve()))
    return parser.parse_args_into_dataclasses(args=argv)


def set_training_defaults(training_args):
    """Model selection on the validation speakers by macro-F1, unless the user chose otherwise."""
    if training_args.metric_for_best_model in (None, "loss") and training_args.load_best_model_at_end:
        training_args.metric_for_best_model = "macro_f1"
        training_args.greater_is_better = True


def config_summary(model):
    config = model.config
    keys = ("encoder_fusion", "decoder_fusion", "use_decoder", "decoder_input", "asr_language", "adapter_dim",
            "pooling", "embedding_dim", "pad_to_30s", "freeze_backbone")
    return {key: getattr(config, key) for key in keys}


def save_tokenizer(source, model_dir, vocab_size):
    """The backbone's tokenizer, so the ASR hypothesis (`hypothesis_ids`) can be read from the model folder alone.
    A folder without tokenizer files loads as an empty tokenizer, so the vocabulary size is checked."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        tokenizer, reason = None, str(error)
    else:
        reason = f"{source} has {len(tokenizer)} tokens, the model {vocab_size}"
    if tokenizer is None or len(tokenizer) < vocab_size:
        logger.warning("no tokenizer saved with the model (%s): hypotheses will show as token ids", reason)
        return
    tokenizer.save_pretrained(model_dir)


def base_model_id(model_args, run_args):
    """The Hub needs an id for `base_model`: a local folder is not one (say which checkpoint it holds with --base_model_id)."""
    if run_args.base_model_id:
        return run_args.base_model_id
    if Path(model_args.model_name_or_path).exists():
        logger.warning("model card: base_model is the local folder %s; pass --base_model_id", model_args.model_name_or_path)
    return model_args.model_name_or_path


def evaluation_protocol(result, data_args):
    """How the card's results were measured, in a sentence or two (empty for a single split)."""
    parts = []
    if result.get("final_trainer") is not None:
        column, folds = data_args.cv_column, len(result["folds"])
        validation = (f"clips with `{data_args.validation_column}` in {' '.join(data_args.validation_groups or [])}"
                      if data_args.validation_column else f"a stratified {data_args.validation_fraction:.0%} of each {column}'s clips")
        parts.append(f"The results below are cross-validation by `{column}` ({folds} folds): every {column} is tested once by "
                     f"a model trained on every other {column}; mean ± std over folds. This checkpoint was trained afterwards "
                     f"with the same settings on every {column} (validation: {validation}), so no test figure exists for it "
                     "beyond these.")
    if data_args.speaker_normalization:
        enrolment = data_args.speaker_normalization_clips
        tested = f" (in the results, each test speaker's statistics came from {enrolment} of its clips per condition)" if enrolment else ""
        parts.append("Trained with per-speaker normalisation (transductive): it expects each speaker's pooled layer "
                     f"statistics standardised with that speaker's own clips{tested}, which single-clip inference does "
                     "not do.")
    return "\n\n".join(parts)


def save_outputs(result, model_args, data_args, training_args, run_args, command):
    """Report for every run; the model folder (with card and handler) for a single-split run, or after
    cross-validation the final model trained on every group (its card headed by the cross-validation results)."""
    output_dir = Path(training_args.output_dir)
    trainer = result.get("final_trainer") or result["trainer"]
    model = trainer.model if trainer is not None else None
    weights = {group: w.tolist() for group, w in model.layer_weights().items()} if model is not None else None
    paths = write_report(result["rows"], output_dir / "report", layer_weights=weights, overwrite=run_args.overwrite_output_dir)
    if (len(result["folds"]) > 1 and result.get("final_trainer") is None) or model is None:
        logger.info("cross-validation: fold models stay in their checkpoint folders under %s", output_dir)
        return paths, None
    model_dir = output_dir / "model"
    model.save_pretrained(model_dir)
    save_tokenizer(model_args.model_name_or_path, model_dir, model.config.backbone_config.vocab_size)
    add_inference_handler(model_dir)
    base_model = base_model_id(model_args, run_args)
    card = render_model_card(
        result["rows"], model_name=training_args.hub_model_id or model_dir.name, base_model=base_model,
        dataset_name=data_args.dataset_name or data_args.audio_folder or data_args.manifest_csv,
        dataset_id=run_args.dataset_hub_id, label_names=result["label_names"], command=command,
        config_summary=config_summary(model), layer_weights=weights, license=run_args.model_card_license,
        benchmark_reports=run_args.benchmark_reports, evaluation_protocol=evaluation_protocol(result, data_args),
    )
    card.save(model_dir / "README.md")
    for path in paths.values():
        (model_dir / path.name).write_bytes(path.read_bytes())
    # Integer-PCM-safe feature extractor, no local paths in config.json, every file readable.
    finalize_model_folder(model_dir, model.build_feature_extractor(), base_model)
    return paths, model_dir


def main(argv=None):
    model_args, data_args, noise_args, training_args, run_args = parse_arguments(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO, handlers=[logging.StreamHandler(sys.stdout)])
    datasets.utils.logging.set_verbosity_warning()
    transformers.utils.logging.set_verbosity_warning()
    token = None
    if training_args.push_to_hub:
        if data_args.cv_column and not run_args.train_final_model:
            raise ValueError("--push_to_hub with --cv_column needs --train_final_model true (fold models stay in their folders)")
        token = check_push_possible(training_args.hub_model_id, training_args.hub_token)
    for report in run_args.benchmark_reports:  # checked now: the card is rendered only after training
        benchmark_markdown(report)
    push, training_args.push_to_hub = training_args.push_to_hub, False  # we push model, card and report ourselves
    set_training_defaults(training_args)
    set_seed(training_args.seed)
    command = "python run_nser.py " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    preflight(data_args, noise_args, training_args)  # every argument and file checked before any model is loaded
    result = run_experiment(model_args, data_args, noise_args, training_args, run_args)
    trainer = result["trainer"]
    if trainer is None or trainer.is_world_process_zero():
        with saving_outputs(training_args.output_dir):  # a kill in there: the same command saves again
            paths, model_dir = save_outputs(result, model_args, data_args, training_args, run_args, command)
        if push and model_dir is not None:
            push_model_folder(model_dir, training_args.hub_model_id, token, private=bool(training_args.hub_private_repo))
        print(f"\nReport: {paths['markdown']}\n" + (f"Model:  {model_dir}\n" if model_dir else ""))
    if trainer is not None:
        trainer.accelerator.end_training()
    return result


if __name__ == "__main__":
    main()
