"""Push a checkpoint folder to the Hugging Face Hub as a model repo, with a model card.

    minigpt push out/colab-t4/checkpoints/step_000953 --repo_id USER/minigpt-124m --dry_run
    minigpt push out/colab-t4/checkpoints/step_000953 --repo_id USER/minigpt-124m --hellaswag out/colab-t4/hellaswag.json

Uploads the model folder (weights, config, modeling code, tokenizer, README.md); the optimizer and trainer state only
with --include_training_state; with --gpt2_copy also a plain GPT-2 export in the repo's gpt2/ folder. The model card is written to CHECKPOINT/README.md when the folder has none or with
--update-card, and only after the token is found and the repo exists; nothing else in the folder is written.
--dry_run prints the files, their sizes and the card that would be written, touching neither the folder nor the
network. The token comes from HF_TOKEN or `hf auth login`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..arguments import ArgumentParser, model_folder
from . import command


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(prog="minigpt push", description=__doc__)
    add = parser.add_argument
    add("checkpoint", type=lambda name: Path(model_folder(name)), help="a checkpoint or model folder (save_pretrained layout)")
    add("--repo-id", "--repo_id", dest="repo_id", required=True, help="USER/NAME on the Hub")
    add("--private", action="store_true", help="create the repo private (if it does not exist yet)")
    add("--include-training-state", "--include_training_state", dest="include_training_state", action="store_true",
        help="also upload training_state/ and trainer_state.json (to resume elsewhere)")
    add("--dry-run", "--dry_run", dest="dry_run", action="store_true",
        help="print the files, sizes and card; write and send nothing")
    add("--commit-message", "--commit_message", dest="commit_message", default=None)
    add("--update-card", "--update_card", dest="update_card", action="store_true",
        help="rewrite CHECKPOINT/README.md even if it exists")
    add("--val-loss", "--val_loss", dest="val_loss", type=float, default=None,
        help="validation loss for the card (default: the last one the run logged up to this checkpoint)")
    add("--hellaswag", type=Path, default=None, help="JSON written by minigpt eval-hellaswag --output, for the card")
    add("--data-dir", "--data_dir", dest="data_dir", type=Path, default=None,
        help="the shard folder trained on: its manifest names the dataset in the card")
    add("--license", default="mit", help="license id for the card (default: mit)")
    add("--gpt2_copy", "--gpt2-copy", dest="gpt2_copy", action="store_true",
        help="also upload a plain GPT-2 export (GPT2LMHeadModel, no custom code) to the repo's gpt2/ folder")
    args = parser.parse_args(argv)
    from ..hub import validate_repo_id

    validate_repo_id(args.repo_id)
    return args


def card_info(args: argparse.Namespace) -> dict:
    """What the card says beyond the folder's config: the checkpoint's own record, overridden by the flags."""
    from ..data import read_manifest
    from ..model_card import card_info_from_checkpoint

    info = card_info_from_checkpoint(args.checkpoint)
    info.update(repo_id=args.repo_id, license=args.license, gpt2_copy=args.gpt2_copy)
    if args.val_loss is not None:
        info["val_loss"] = args.val_loss
    if args.hellaswag is not None:
        if not args.hellaswag.is_file():
            raise FileNotFoundError(f"--hellaswag {args.hellaswag}: no such file")
        try:
            info["hellaswag"] = json.loads(args.hellaswag.read_text(encoding="utf-8"))
            float(info["hellaswag"]["acc_norm"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise ValueError(f"--hellaswag {args.hellaswag}: not the JSON that minigpt eval-hellaswag --output "
                             "writes (no acc_norm); pass that file") from None
    if args.data_dir is not None:
        info["data_source"] = read_manifest(args.data_dir)["source"]
    return info


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from ..hub import files_to_upload, format_file_list, push_folder
    from ..model_card import make_model_card

    files = files_to_upload(args.checkpoint, args.include_training_state)
    info = card_info(args)
    write_card = args.update_card or not (args.checkpoint / "README.md").exists()
    if args.dry_run:
        card = make_model_card(args.checkpoint, info) if write_card else None
        if card is not None:
            files = sorted([f for f in files if f[0] != "README.md"] + [("README.md", len(card.encode("utf-8")))])
        visibility = "private" if args.private else "public"
        print(f"dry run: would upload to {args.repo_id} ({visibility} if created); nothing written or sent")
        print(format_file_list(files))
        if card is None:
            print("README.md: the folder's own card, as is (--update-card regenerates it)")
        else:
            print(f"README.md would be written to {args.checkpoint / 'README.md'}:\n{card}")
        return 0
    commit = push_folder(
        args.checkpoint,
        args.repo_id,
        private=args.private,
        include_training_state=args.include_training_state,
        commit_message=args.commit_message,
        card_info=info if write_card else None,
        gpt2_copy=args.gpt2_copy,
    )
    print(f"pushed {args.checkpoint} to https://huggingface.co/{args.repo_id}: {commit.commit_url}")
    return 0

