"""Pushing a checkpoint folder to the Hugging Face Hub: the token, what goes up, and the upload itself.

* :func:`push_folder` -- a blocking push (``minigpt push``); :class:`HubPusher` -- the trainer's pushes in one
  background thread, which never raise into the training loop and only ever add a README.md to a checkpoint;
* :func:`files_to_upload` -- exactly what a push sends (``upload_folder``'s own ``allow/ignore_patterns`` filter):
  the model folder without the training state unless asked;
* the token comes from ``HF_TOKEN`` or ``hf auth login`` and is kept out of anything written
  (:func:`minigpt_hf.checkpoint.redact`).

Network calls happen only in :func:`push_folder` and :meth:`HubPusher.push`; everything else works offline.
"""

from __future__ import annotations

import logging
import os
import tempfile
from concurrent.futures import Future
from pathlib import Path

from .checkpoint import COMPLETE_NAME, TRAINER_STATE_NAME, TRAINING_STATE_DIR, redact, verify_folder

logger = logging.getLogger(__name__)

TRAINING_STATE_PATTERNS = [f"{TRAINING_STATE_DIR}/*", TRAINER_STATE_NAME]
NEVER_PUSHED = [".*", "*/.*", COMPLETE_NAME, "*.lock"]  # hidden files, temporaries, the completion marker
GPT2_SUBFOLDER = "gpt2"


class HubError(RuntimeError):
    """A push that failed: no token, the Hub unreachable or refusing. The message is one line saying what to do."""


def get_hub_token(token: str | None = None) -> str:
    """``token``, else the one ``huggingface_hub`` finds (``HF_TOKEN``, then ``hf auth login``'s stored token)."""
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise HubError("no Hugging Face token: set HF_TOKEN or run `hf auth login` with a token that has write access")
    return token


def ignore_patterns(include_training_state: bool = False) -> list[str]:
    return NEVER_PUSHED + ([] if include_training_state else TRAINING_STATE_PATTERNS)


def files_to_upload(folder: str | os.PathLike, include_training_state: bool = False,
                    contents: bool = True) -> list[tuple[str, int]]:
    """``(relative path, size in bytes)`` of every file that a push of ``folder`` sends, sorted: filtered by the
    same patterns that :func:`push_folder` gives ``upload_folder``. The folder must be a finished model folder whose
    files verify (sizes, and with ``contents`` their sha256)."""
    from huggingface_hub.utils import filter_repo_objects

    folder = verify_folder(folder, contents=contents)
    names = [p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*")) if p.is_file()]
    kept = filter_repo_objects(names, ignore_patterns=ignore_patterns(include_training_state))
    return [(name, (folder / name).stat().st_size) for name in kept]


def format_file_list(files: list[tuple[str, int]]) -> str:
    """The files and sizes as aligned lines, with a total."""
    width = max((len(name) for name, _ in files), default=0)
    lines = [f"{name:<{width}}  {size:>14,} B" for name, size in files]
    lines.append(f"{len(files)} files, {sum(size for _, size in files):,} bytes")
    return "\n".join(lines)


def _hub_failure(action: str, repo_id: str, err: BaseException) -> HubError:
    """A one-line :class:`HubError` for ``err`` (redacted), with what to do next."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    detail = redact(" ".join(str(err).split()))[:300]
    if isinstance(err, OfflineModeIsEnabled):
        hint = "unset HF_HUB_OFFLINE and retry"
    elif isinstance(err, HfHubHTTPError) and err.response is not None and err.response.status_code in (401, 403):
        hint = f"check that the token has write access to {repo_id} (`hf auth login`) and retry"
    else:
        hint = "check the network and retry"
    return HubError(f"could not {action} {repo_id} on the Hugging Face Hub ({type(err).__name__}: {detail}); {hint}")


def _create_repo(api, repo_id: str, token: str, private: bool) -> None:
    try:
        api.create_repo(repo_id, token=token, private=private, exist_ok=True)
    except Exception as err:
        raise _hub_failure("create", repo_id, err) from None


def _upload(api, repo_id: str, folder: Path, token: str, message: str, include_training_state: bool,
            path_in_repo: str | None = None):
    """One ``upload_folder`` commit of ``folder`` (filtered as :func:`files_to_upload` lists); the CommitInfo."""
    try:
        return api.upload_folder(repo_id=repo_id, folder_path=folder, path_in_repo=path_in_repo,
                                 commit_message=message, token=token,
                                 ignore_patterns=ignore_patterns(include_training_state))
    except Exception as err:
        raise _hub_failure("upload to", repo_id, err) from None


def _upload_gpt2_copy(api, repo_id: str, folder: Path, token: str, message: str):
    """Export ``folder`` as plain GPT-2 (:func:`minigpt_hf.conversion.export_gpt2`) and upload it to ``gpt2/``."""
    from .conversion import export_gpt2

    with tempfile.TemporaryDirectory(prefix="minigpt-gpt2-") as tmp:
        exported = export_gpt2(folder, Path(tmp) / GPT2_SUBFOLDER)
        return _upload(api, repo_id, exported, token, f"{message} (GPT-2 format)", False, GPT2_SUBFOLDER)


def validate_repo_id(repo_id: str) -> None:
    """A ValueError naming a malformed ``USER/NAME``."""
    from huggingface_hub.utils import HFValidationError
    from huggingface_hub.utils import validate_repo_id as check

    try:
        check(repo_id)
        if repo_id.count("/") != 1:
            raise HFValidationError("expected exactly one '/'")
    except HFValidationError as err:
        raise ValueError(f"--repo_id {repo_id!r} is not a Hub repo id ({err}); use USER/NAME") from None


def push_folder(folder, repo_id: str, private: bool = False, token: str | None = None,
                include_training_state: bool = False, commit_message: str | None = None,
                card_info: dict | None = None, gpt2_copy: bool = False, api=None):
    """Push :func:`files_to_upload` of ``folder`` to the model repo ``repo_id`` (created if missing); the CommitInfo.

    With ``card_info`` the model card is (re)written to ``folder/README.md`` first -- only once the token is found
    and the repo exists; otherwise nothing in ``folder`` is written. With ``gpt2_copy`` a plain GPT-2 export goes
    to the repo's ``gpt2/`` folder as well. Raises :class:`HubError` without a token or when the Hub fails.
    """
    from huggingface_hub import HfApi

    from .model_card import write_model_card

    validate_repo_id(repo_id)
    folder = Path(folder)
    files_to_upload(folder, include_training_state)  # a bad folder is an error before any network call
    token = get_hub_token(token)
    api = api or HfApi()
    _create_repo(api, repo_id, token, private)
    if card_info is not None:
        write_model_card(folder, {**card_info, "gpt2_copy": gpt2_copy})
    message = commit_message or f"Upload {folder.name}"
    commit = _upload(api, repo_id, folder, token, message, include_training_state)
    if gpt2_copy:
        _upload_gpt2_copy(api, repo_id, folder, token, message)
    return commit


class HubPusher:
    """The trainer's uploads: each :meth:`push` returns at once; the uploads run in order in one background thread.

    Failures (no token, Hub unreachable, refused) never raise into the caller: each is logged as one warning line
    and collected in :attr:`errors`, which :meth:`wait` returns at the end of training. Nothing in a checkpoint
    folder is changed or removed (a missing README.md may be added). The repo is created (``exist_ok``) with the
    first upload; :attr:`commits` lists the commit URLs of the uploads done.
    """

    def __init__(self, repo_id: str, private: bool = False, token: str | None = None,
                 include_training_state: bool = False, gpt2_copy: bool = False, api=None):
        from huggingface_hub import HfApi, get_token

        validate_repo_id(repo_id)  # a malformed id is an argument error, raised now
        if token is None and get_token() is None:
            logger.warning("no Hugging Face token (HF_TOKEN or `hf auth login`): checkpoints will be saved, but "
                           "pushing them to %s will fail", repo_id)
        self.repo_id, self.private, self.include_training_state = repo_id, private, include_training_state
        self.gpt2_copy = gpt2_copy
        self._token = token
        self._api = api or HfApi()
        self._futures: list[Future] = []
        self._repo_created = False
        self.errors: list[str] = []
        self.commits: list[str] = []

    def push(self, folder, commit_message: str | None = None, card_info: dict | None = None) -> Future | None:
        """Queue an upload of ``folder``; its Future (of a CommitInfo, or of None if the upload failed), or None if
        it could not even be queued (no token, not a finished model folder). A folder without a ``README.md`` first
        gets one: :func:`card_info_from_checkpoint`, updated with ``card_info``."""
        from .model_card import card_info_from_checkpoint, write_model_card

        folder = Path(folder)
        try:
            token = get_hub_token(self._token)
            files_to_upload(folder, self.include_training_state, contents=False)  # sha256: in the background
            if not (folder / "README.md").exists():
                info = {**card_info_from_checkpoint(folder), "repo_id": self.repo_id, "gpt2_copy": self.gpt2_copy,
                        **(card_info or {})}
                write_model_card(folder, info)
            message = commit_message or f"Upload {folder.name}"
            future = self._api.run_as_future(self._push_now, folder, token, message)
        except Exception as err:
            self._fail(folder, err)
            return None
        self._futures.append(future)
        return future

    def _push_now(self, folder: Path, token: str, message: str):
        """Runs in the background thread; records the outcome before the Future completes."""
        try:
            verify_folder(folder)  # every file's sha256, off the training loop
            if not self._repo_created:
                _create_repo(self._api, self.repo_id, token, self.private)
                self._repo_created = True
            commit = _upload(self._api, self.repo_id, folder, token, message, self.include_training_state)
            if self.gpt2_copy:
                _upload_gpt2_copy(self._api, self.repo_id, folder, token, message)
        except Exception as err:
            self._fail(folder, err)
            return None
        self.commits.append(commit.commit_url)
        logger.info("pushed %s to %s", folder, commit.commit_url)
        return commit

    def _fail(self, folder: Path, err: BaseException) -> None:
        message = f"push of {folder} to {self.repo_id} failed: {redact(str(err))}"
        if isinstance(err, HubError):
            message += f"; the checkpoint is saved, push it later: minigpt push {folder} --repo_id {self.repo_id}"
        self.errors.append(message)
        logger.warning(message)

    def wait(self, timeout: float | None = None) -> list[str]:
        """Wait up to ``timeout`` seconds in all for the queued uploads; the error messages (empty if all went up)."""
        from concurrent.futures import wait

        _, pending = wait(self._futures, timeout=timeout)
        self._futures = list(pending)
        if pending:
            self.errors.append(f"{len(pending)} push(es) to {self.repo_id} still running after {timeout} s")
            logger.warning(self.errors[-1])
        return list(self.errors)
