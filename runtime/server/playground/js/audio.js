// Speech (text, voice, format, speed, a player and a download link) and transcription (an uploaded
// or recorded file, every response format, word timestamps).

import { $, el, fillModels, setStatus } from "./dom.js";
import { call, withCapability } from "./api.js";

const PLAYABLE = new Set(["mp3", "wav", "opus", "aac", "flac"]);
let speechModels = [];
let speechUrl = null;
let recording = null;  // {recorder, chunks} while the microphone records
let recorded = null;   // the last recording, a File

export function setupAudio() {
  $("speech-model").addEventListener("change", fillVoices);
  $("speech-form").addEventListener("submit", (event) => { event.preventDefault(); speak(); });
  $("transcribe-form").addEventListener("submit", (event) => { event.preventDefault(); transcribe(); });
  $("transcribe-record").addEventListener("click", toggleRecording);
  $("transcribe-file").addEventListener("change", () => { recorded = null; $("transcribe-recorded").textContent = ""; });
}

export function setAudioModels(models) {
  speechModels = withCapability(models, "speech");
  fillModels($("speech-model"), speechModels);
  fillVoices();
  fillModels($("transcribe-model"), withCapability(models, "transcriptions"));
}

function fillVoices() {
  const model = speechModels.find((candidate) => candidate.id === $("speech-model").value);
  const voices = model?.meta?.voices || ["alloy"];
  const previous = $("speech-voice").value;
  $("speech-voice").replaceChildren(...voices.map((voice) => el("option", {}, voice)));
  if (voices.includes(previous)) $("speech-voice").value = previous;
}

async function speak() {
  const format = $("speech-format").value;
  const body = { model: $("speech-model").value, input: $("speech-input").value, voice: $("speech-voice").value,
    response_format: format, speed: Number($("speech-speed").value) || 1 };
  $("speech-go").disabled = true;
  setStatus($("speech-status"), "Synthesising...");
  try {
    const blob = await (await call("/audio/speech", { method: "POST", body })).blob();
    if (speechUrl) URL.revokeObjectURL(speechUrl);
    speechUrl = URL.createObjectURL(blob);
    $("speech-out").hidden = false;
    $("speech-audio").hidden = !PLAYABLE.has(format);
    if (PLAYABLE.has(format)) $("speech-audio").src = speechUrl;
    $("speech-download").href = speechUrl;
    $("speech-download").download = `speech.${format}`;
    $("speech-download").textContent = `Download speech.${format}`;
    setStatus($("speech-status"), PLAYABLE.has(format) ? "" : "Raw PCM (24 kHz, 16-bit mono) has no player: download it.");
  } catch (error) {
    setStatus($("speech-status"), error.message, true);
  } finally {
    $("speech-go").disabled = false;
  }
}

async function toggleRecording() {
  const button = $("transcribe-record");
  if (recording) { recording.recorder.stop(); return; }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const recorder = new MediaRecorder(stream);
    recording = { recorder, chunks: [] };
    recorder.addEventListener("dataavailable", (event) => recording.chunks.push(event.data));
    recorder.addEventListener("stop", () => {
      stream.getTracks().forEach((track) => track.stop());
      const type = recorder.mimeType || "audio/webm";
      recorded = new File(recording.chunks, `recording.${type.includes("ogg") ? "ogg" : "webm"}`, { type });
      recording = null;
      button.textContent = "Record";
      button.setAttribute("aria-pressed", "false");
      $("transcribe-recorded").textContent = `Recorded ${Math.round(recorded.size / 1024)} KB: Transcribe sends it.`;
    });
    recorder.start();
    button.textContent = "Stop recording";
    button.setAttribute("aria-pressed", "true");
  } catch (error) {
    setStatus($("transcribe-status"), `The microphone is not available: ${error.message}`, true);
  }
}

async function transcribe() {
  const file = recorded || $("transcribe-file").files[0];
  if (!file) { setStatus($("transcribe-status"), "Choose an audio file or record one first.", true); return; }
  const format = $("transcribe-format").value;
  const form = new FormData();
  form.append("model", $("transcribe-model").value);
  form.append("file", file);
  form.append("response_format", format);
  if ($("transcribe-language").value.trim()) form.append("language", $("transcribe-language").value.trim());
  if (format === "verbose_json" && $("transcribe-words").checked) {
    form.append("timestamp_granularities[]", "word");
    form.append("timestamp_granularities[]", "segment");
  }
  $("transcribe-go").disabled = true;
  $("transcribe-text").textContent = "";
  $("transcribe-words-out").replaceChildren();
  setStatus($("transcribe-status"), "Transcribing...");
  try {
    const response = await call("/audio/transcriptions", { method: "POST", body: form });
    if (format === "json" || format === "verbose_json") showJson(await response.json());
    else $("transcribe-text").textContent = await response.text();
    setStatus($("transcribe-status"), "");
  } catch (error) {
    setStatus($("transcribe-status"), error.message, true);
  } finally {
    $("transcribe-go").disabled = false;
  }
}

function showJson(result) {
  $("transcribe-text").textContent = result.text;
  const words = (result.words || []).map((word) => el("li", {}, word.word.trim(),
    el("small", {}, `${word.start.toFixed(2)}–${word.end.toFixed(2)} s`)));
  $("transcribe-words-out").replaceChildren(...words);
}
