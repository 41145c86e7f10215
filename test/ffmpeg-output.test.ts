// What FFmpeg prints, read without a process (actors/camera/ffmpeg-output.ts):
// single stream lines, whole stderr transcripts captured from Debian's
// ffmpeg 5.1 against the stand-in RTSP camera (test/helpers/rtsp-camera.ts),
// the failure class of each, the -progress blocks and the analysis frames.

import { describe, expect, test } from "vitest";
import {
  classifyFfmpegExit,
  FfmpegStderr,
  FrameAssembler,
  lineSplitter,
  parseVideoStreamLine,
  progressParser,
  type AnalysisFrame,
  type FfmpegExit,
  type IngestFailure,
} from "../actors/camera/ffmpeg-output.ts";

/**
 * Whole stderr of `ffmpeg <buildFfmpegArgs(spec)>` (copy mode, AI off), as
 * ffmpeg 5.1.9 (Debian 12) wrote it, with the exit it ended with.
 */
const CAPTURED = {
  /** rtsp://127.0.0.1:1/cam: nothing listens. Exit code 1. */
  refused: { code: 1, stderr: `ffmpeg stats and -progress period set to 0.5.
[tcp @ 0x562af4db2f80] Connection to tcp://127.0.0.1:1?timeout=5000000 failed: Connection refused
rtsp://127.0.0.1:1/cam: Connection refused
` },
  /** A wrong password for a camera that wants one. Exit code 1. */
  wrongPassword: { code: 1, stderr: `ffmpeg stats and -progress period set to 0.5.
[rtsp @ 0x560f4814e280] method DESCRIBE failed: 401 Unauthorized
rtsp://admin:wrong@127.0.0.1:16706/cam: Server returned 401 Unauthorized (authorization failed)
` },
  /** No credentials for a camera that wants them. Exit code 1. */
  noCredentials: { code: 1, stderr: `ffmpeg stats and -progress period set to 0.5.
[rtsp @ 0x55cebce46280] method DESCRIBE failed: 401 Unauthorized
rtsp://127.0.0.1:16706/cam: Server returned 401 Unauthorized (authorization failed)
` },
  /** A path the camera does not serve. Exit code 1. */
  notFound: { code: 1, stderr: `ffmpeg stats and -progress period set to 0.5.
[rtsp @ 0x562c36c77280] method DESCRIBE failed: 404 Not Found
rtsp://127.0.0.1:16707/nope: Server returned 404 Not Found
` },
  /** An H.265 camera, copied (left to run: the bitstream filter refuses it). Exit code 1. */
  hevc: { code: 1, stderr: `ffmpeg stats and -progress period set to 0.5.
Input #0, rtsp, from 'rtsp://admin:s3cret@127.0.0.1:16706/hevc':
  Metadata:
    title           : Session streamed with GStreamer
    comment         : rtsp-server
  Duration: N/A, start: 0.100000, bitrate: N/A
  Stream #0:0: Video: hevc (Main), yuv420p(tv, smpte170m), 320x240 [SAR 1:1 DAR 4:3], 10 fps, 10 tbr, 90k tbn
[h264_mp4toannexb @ 0x5568b4da5b40] Codec 'hevc' (173) is not supported by the bitstream filter 'h264_mp4toannexb'. Supported codecs are: h264 (27) 
Error initializing bitstream filter: h264_mp4toannexb
Error initializing output stream 0:0 -- 
Stream mapping:
  Stream #0:0 -> #0:0 (copy)
    Last message repeated 1 times
` },
  /** Streaming, then the camera SIGSTOPped (ioTimeoutMs 1000). Exit code 0, yet a failure. */
  stalled: { code: 0, stderr: `ffmpeg stats and -progress period set to 0.5.
Input #0, rtsp, from 'rtsp://127.0.0.1:16707/cam':
  Metadata:
    title           : Session streamed with GStreamer
    comment         : rtsp-server
  Duration: N/A, start: 0.100000, bitrate: N/A
  Stream #0:0: Video: h264 (Constrained Baseline), yuv420p(tv, smpte170m, progressive), 320x240 [SAR 1:1 DAR 4:3], 10 fps, 10 tbr, 90k tbn
Output #0, rtp, to 'rtp://127.0.0.1:45999?pkt_size=1200':
  Metadata:
    title           : Session streamed with GStreamer
    comment         : rtsp-server
    encoder         : Lavf59.27.100
  Stream #0:0: Video: h264 (Constrained Baseline), yuv420p(tv, smpte170m, progressive), 320x240 [SAR 1:1 DAR 4:3], q=2-31, 10 fps, 10 tbr, 90k tbn
Stream mapping:
  Stream #0:0 -> #0:0 (copy)
[rtp @ 0x55c621b26440] Timestamps are unset in a packet for stream 0. This is deprecated and will stop working in the future. Fix your code to set the timestamps properly
rtsp://127.0.0.1:16707/cam: Connection timed out
frame=   22 fps= 20 q=-1.0 Lsize=      16kB time=00:00:02.00 bitrate=  64.2kbits/s speed=1.81x    
video:15kB audio:0kB subtitle:0kB other streams:0kB global headers:0kB muxing overhead: 1.452846%
` },
  /** Streaming, then the camera SIGKILLed: an orderly end of the TCP stream. Exit code 0. */
  ended: { code: 0, stderr: `ffmpeg stats and -progress period set to 0.5.
Input #0, rtsp, from 'rtsp://127.0.0.1:16707/cam':
  Metadata:
    title           : Session streamed with GStreamer
    comment         : rtsp-server
  Duration: N/A, start: 0.100000, bitrate: N/A
  Stream #0:0: Video: h264 (Constrained Baseline), yuv420p(tv, smpte170m, progressive), 320x240 [SAR 1:1 DAR 4:3], 10 fps, 10 tbr, 90k tbn
Output #0, rtp, to 'rtp://127.0.0.1:45999?pkt_size=1200':
  Metadata:
    title           : Session streamed with GStreamer
    comment         : rtsp-server
    encoder         : Lavf59.27.100
  Stream #0:0: Video: h264 (Constrained Baseline), yuv420p(tv, smpte170m, progressive), 320x240 [SAR 1:1 DAR 4:3], q=2-31, 10 fps, 10 tbr, 90k tbn
Stream mapping:
  Stream #0:0 -> #0:0 (copy)
[rtp @ 0x5585fe5bb040] Timestamps are unset in a packet for stream 0. This is deprecated and will stop working in the future. Fix your code to set the timestamps properly
frame=   23 fps=0.0 q=-1.0 Lsize=      16kB time=00:00:02.10 bitrate=  63.8kbits/s speed=6.54e+03x    
video:16kB audio:0kB subtitle:0kB other streams:0kB global headers:0kB muxing overhead: 1.446994%
` },
} as const;

/** Reads a transcript the way the ingest does (chunks → lines → FfmpegStderr) and classifies the exit. */
function readTranscript(t: { code: number; stderr: string }, more: Partial<FfmpegExit> = {}) {
  const reader = new FfmpegStderr();
  const named: string[] = [];
  const split = lineSplitter((line) => {
    if (reader.push(line) === "input") named.push(line);
  });
  // In uneven chunks, as a pipe delivers them.
  for (let i = 0; i < t.stderr.length; i += 97) split.push(t.stderr.slice(i, i + 97));
  split.end();
  const failure = classifyFfmpegExit({
    stderr: reader.tail,
    code: t.code,
    signal: null,
    scheme: "rtsp",
    inputOpened: reader.inputOpened,
    inputCodec: reader.input?.codec,
    copying: true,
    ...more,
  });
  return { reader, named, failure };
}

describe("whole stderr transcripts of ffmpeg 5.1, read and classified", () => {
  test("connection refused: SOURCE_UNREACHABLE, the input never opened", () => {
    const { reader, failure } = readTranscript(CAPTURED.refused);
    expect(reader.inputOpened).toBe(false);
    expect(reader.input).toBeUndefined();
    expect(failure).toEqual({ code: "SOURCE_UNREACHABLE", detail: "rtsp://127.0.0.1:1/cam: Connection refused" });
  });

  test("401 with a wrong password: SOURCE_AUTH, and the password is not in the detail", () => {
    const { failure } = readTranscript(CAPTURED.wrongPassword);
    expect(failure).toEqual({ code: "SOURCE_AUTH", detail: "rtsp://***@127.0.0.1:16706/cam: Server returned 401 Unauthorized (authorization failed)" });
    expect(failure.detail).not.toContain("wrong");
  });

  test("401 without credentials: SOURCE_AUTH", () => {
    expect(readTranscript(CAPTURED.noCredentials).failure).toEqual({
      code: "SOURCE_AUTH",
      detail: "rtsp://127.0.0.1:16706/cam: Server returned 401 Unauthorized (authorization failed)",
    });
  });

  test("404: SOURCE_UNREACHABLE (the camera answers, the stream is not there)", () => {
    expect(readTranscript(CAPTURED.notFound).failure).toEqual({ code: "SOURCE_UNREACHABLE", detail: "rtsp://127.0.0.1:16707/nope: Server returned 404 Not Found" });
  });

  test("an H.265 source: its stream line names hevc first (where the ingest cuts the copy short); UNSUPPORTED_CODEC", () => {
    const { reader, named, failure } = readTranscript(CAPTURED.hevc);
    expect(named).toEqual(["  Stream #0:0: Video: hevc (Main), yuv420p(tv, smpte170m), 320x240 [SAR 1:1 DAR 4:3], 10 fps, 10 tbr, 90k tbn"]);
    expect(reader.inputOpened).toBe(true);
    expect(reader.input).toEqual({ codec: "hevc", width: 320, height: 240, fps: 10, pixFmt: "yuv420p" });
    expect(failure).toEqual({ code: "UNSUPPORTED_CODEC", detail: "source video is hevc, not H.264, and transcoding is off" });
    // Without the codec from the stream line, the bitstream filter's refusal says the same.
    expect(readTranscript(CAPTURED.hevc, { inputCodec: undefined }).failure).toMatchObject({
      code: "UNSUPPORTED_CODEC",
      detail: expect.stringMatching(/^\[h264_mp4toannexb\] Codec 'hevc' \(173\) is not supported by the bitstream filter/),
    });
  });

  test("a camera frozen mid-stream: exit code 0, yet SOURCE_UNREACHABLE (the read timed out)", () => {
    const { reader, named, failure } = readTranscript(CAPTURED.stalled);
    // The output section's stream line is the same codec, but only the input's counts.
    expect(named).toHaveLength(1);
    expect(reader.input).toEqual({ codec: "h264", width: 320, height: 240, fps: 10, pixFmt: "yuv420p" });
    expect(reader.analysis).toBeUndefined(); // AI off: no output #1
    expect(failure).toEqual({ code: "SOURCE_UNREACHABLE", detail: "rtsp://127.0.0.1:16707/cam: Connection timed out" });
  });

  test("a camera that went away: exit code 0 with no error line is the stream ending, FFMPEG_EXITED", () => {
    const { reader, failure } = readTranscript(CAPTURED.ended);
    expect(reader.inputOpened).toBe(true);
    expect(failure.code).toBe("FFMPEG_EXITED");
    // FFmpeg's summary lines are kept; the indented metadata and the timestamp warning are noise.
    expect(failure.detail).toMatch(/^the source ended the stream \(ffmpeg exited with code 0\): .*frame= +23 .*\| video:16kB/);
    expect(failure.detail).not.toMatch(/Timestamps are unset|Metadata|0x55/);
  });

  test("the tail keeps the last lines only", () => {
    const reader = new FfmpegStderr(3);
    for (const l of ["a", "b", "c", "d"]) reader.push(l);
    expect(reader.tail).toEqual(["b", "c", "d"]);
  });
});

describe("FfmpegStderr: the analysis output's size comes from output #1 only", () => {
  test("output #0's stream line is not the analysis size; output #1's is", () => {
    const reader = new FfmpegStderr();
    for (const line of [
      "Input #0, rtsp, from 'rtsp://127.0.0.1:16707/cam':",
      "  Stream #0:0: Video: h264 (Constrained Baseline), yuv420p(tv, smpte170m, progressive), 640x360 [SAR 1:1 DAR 16:9], 15 fps, 15 tbr, 90k tbn",
      "Output #0, rtp, to 'rtp://127.0.0.1:45999?pkt_size=1200':",
      "  Stream #0:0: Video: h264 (Constrained Baseline), yuv420p(tv, smpte170m, progressive), 640x360 [SAR 1:1 DAR 16:9], q=2-31, 15 fps, 15 tbr, 90k tbn",
      "Output #1, rawvideo, to 'pipe:3':",
      "  Stream #1:0: Video: rawvideo (Y800 / 0x30303859), gray(pc, smpte170m, progressive), 320x180 [SAR 1:1 DAR 16:9], q=2-31, 921 kb/s, 5 fps, 5 tbn",
      "Stream mapping:",
      "  Stream #0:0 -> #0:0 (copy)",
    ]) reader.push(line);
    expect(reader.input).toMatchObject({ codec: "h264", width: 640, height: 360, fps: 15 });
    expect(reader.analysis).toEqual({ width: 320, height: 180 });
  });
});

describe("progressParser and lineSplitter", () => {
  test("key=value lines in blocks closed by progress=; \\r, \\n and \\r\\n all end a line", () => {
    const blocks: Array<Record<string, string>> = [];
    const split = lineSplitter(progressParser((b) => blocks.push(Object.fromEntries(b))));
    split.push("frame=12\nfps=15.0\r\nout_time_us=800000\rspeed=1.0");
    split.push("1x\nprogress=continue\nframe=20\nprogress=e");
    split.push("nd\n");
    split.end();
    expect(blocks).toEqual([
      { frame: "12", fps: "15.0", out_time_us: "800000", speed: "1.01x", progress: "continue" },
      { frame: "20", progress: "end" },
    ]);
  });
});

describe("FrameAssembler", () => {
  test("cuts the pipe into frames of width × height × bytes per pixel, whatever the chunks, once the size is known", () => {
    const frames: AnalysisFrame[] = [];
    const assembler = new FrameAssembler("rgb24", (f) => frames.push(f), () => 1_700_000_000_000);
    const size = { width: 4, height: 2 }; // 24 bytes a frame
    const bytes = Buffer.from(Array.from({ length: 60 }, (_, i) => i));
    assembler.push(bytes.subarray(0, 10), undefined); // size not named yet: kept
    assembler.push(bytes.subarray(10, 30), size);
    assembler.push(bytes.subarray(30, 60), size);
    expect(frames.map((f) => [...f.data])).toEqual([[...bytes.subarray(0, 24)], [...bytes.subarray(24, 48)]]);
    expect(frames[0]).toMatchObject({ width: 4, height: 2, pixFmt: "rgb24", ts: 1_700_000_000_000 });
  });
});

describe("parseVideoStreamLine (lines from ffmpeg 5.1)", () => {
  test.each([
    [
      "  Stream #0:0: Video: h264 (Constrained Baseline), yuv420p(tv, smpte170m, progressive), 640x360 [SAR 1:1 DAR 16:9], 15 fps, 15 tbr, 90k tbn",
      { file: 0, stream: { codec: "h264", width: 640, height: 360, fps: 15, pixFmt: "yuv420p" } },
    ],
    [
      "  Stream #0:0(und): Video: h264 (High) (avc1 / 0x31637661), yuv420p(progressive), 1920x1080 [SAR 1:1 DAR 16:9], 4947 kb/s, 29.97 fps, 29.97 tbr, 30k tbn (default)",
      { file: 0, stream: { codec: "h264", width: 1920, height: 1080, fps: 29.97, pixFmt: "yuv420p" } },
    ],
    [
      "  Stream #0:0: Video: mjpeg (Baseline), yuvj420p(pc, bt470bg/unknown/unknown), 640x360 [SAR 1:1 DAR 16:9], 15 tbr, 90k tbn",
      { file: 0, stream: { codec: "mjpeg", width: 640, height: 360, fps: 15, pixFmt: "yuvj420p" } },
    ],
    [
      "  Stream #0:0: Video: h264, yuv420p(progressive), 1280x720, 90k tbr, 90k tbn",
      { file: 0, stream: { codec: "h264", width: 1280, height: 720, fps: 0, pixFmt: "yuv420p" } },
    ],
    [
      "  Stream #1:0: Video: rawvideo (Y800 / 0x30303859), gray(pc, smpte170m, progressive), 320x180 [SAR 1:1 DAR 16:9], q=2-31, 921 kb/s, 2 fps, 2 tbn",
      { file: 1, stream: { codec: "rawvideo", width: 320, height: 180, fps: 2, pixFmt: "gray" } },
    ],
    [
      "  Stream #0:1[0x101]: Video: hevc (Main) ([36][0][0][0] / 0x0024), yuv420p(tv), 3840x2160, 25 fps, 25 tbr, 90k tbn",
      { file: 0, stream: { codec: "hevc", width: 3840, height: 2160, fps: 25, pixFmt: "yuv420p" } },
    ],
  ])("%s", (line, expected) => {
    expect(parseVideoStreamLine(line)).toEqual(expected);
  });

  test.each([["  Stream #0:0 -> #0:0 (copy)"], ["  Stream #0:1: Audio: aac (LC), 48000 Hz, stereo, fltp"], ["Input #0, rtsp, from 'rtsp://x':"]])(
    "not a video stream line: %s",
    (line) => expect(parseVideoStreamLine(line)).toBeUndefined(),
  );
});

describe("classifyFfmpegExit (stderr of ffmpeg 5.1, captured)", () => {
  const exit = (stderr: string[], more: Partial<FfmpegExit> = {}): FfmpegExit => ({ stderr, code: 1, signal: null, scheme: "rtsp", ...more });
  const cases: Array<[string, FfmpegExit, IngestFailure["code"], RegExp]> = [
    [
      "RTSP 401, no credentials",
      exit(["[rtsp @ 0x55c987cb7a80] method DESCRIBE failed: 401 Unauthorized", "rtsp://127.0.0.1:42967/auth: Server returned 401 Unauthorized (authorization failed)"]),
      "SOURCE_AUTH",
      /^rtsp:\/\/127\.0\.0\.1:42967\/auth: Server returned 401 Unauthorized/,
    ],
    [
      "RTSP 401, wrong password (redacted)",
      exit(["[rtsp @ 0x560b511cea80] method DESCRIBE failed: 401 Unauthorized", "rtsp://admin:wrong@127.0.0.1:42967/auth: Server returned 401 Unauthorized (authorization failed)"]),
      "SOURCE_AUTH",
      /^rtsp:\/\/\*\*\*@127\.0\.0\.1:42967\/auth: Server returned 401/,
    ],
    [
      "HTTP 401",
      exit(["[http @ 0x5564a3335180] HTTP error 401 Unauthorized", "http://u:p@127.0.0.1:42739/401.ts: Server returned 401 Unauthorized (authorization failed)"], { scheme: "http" }),
      "SOURCE_AUTH",
      /^http:\/\/\*\*\*@127\.0\.0\.1:42739\/401\.ts: Server returned 401/,
    ],
    [
      "HTTP 403",
      exit(["[http @ 0x557568d7e180] HTTP error 403 Forbidden", "http://127.0.0.1:42739/403.ts: Server returned 403 Forbidden (access denied)"], { scheme: "http" }),
      "SOURCE_AUTH",
      /403 Forbidden \(access denied\)$/,
    ],
    [
      "connection refused",
      exit(["[tcp @ 0x5584e2727940] Connection to tcp://127.0.0.1:1?timeout=5000000 failed: Connection refused", "rtsp://127.0.0.1:1/cam: Connection refused"]),
      "SOURCE_UNREACHABLE",
      /^rtsp:\/\/127\.0\.0\.1:1\/cam: Connection refused$/,
    ],
    [
      "RTSP 404",
      exit(["[rtsp @ 0x55b2f9244a80] method DESCRIBE failed: 404 Not Found", "rtsp://127.0.0.1:42967/nope: Server returned 404 Not Found"]),
      "SOURCE_UNREACHABLE",
      /Server returned 404 Not Found$/,
    ],
    [
      "HTTP 404",
      exit(["[http @ 0x560d2d504180] HTTP error 404 File not found", "http://127.0.0.1:41965/nope.mp4: Server returned 404 Not Found"], { scheme: "http" }),
      "SOURCE_UNREACHABLE",
      /404 Not Found$/,
    ],
    [
      "name resolution",
      exit(["[tcp @ 0x5614407f9940] Failed to resolve hostname no-such-host.invalid: Name or service not known", "rtsp://no-such-host.invalid/cam: Input/output error"]),
      "SOURCE_UNREACHABLE",
      /^\[tcp\] Failed to resolve hostname no-such-host\.invalid/,
    ],
    [
      "no route to host",
      exit(["[tcp @ 0x555f8db27940] Connection to tcp://[2001:db8::1]:554?timeout=3000000 failed: No route to host", "rtsp://[2001:db8::1]:554/cam: No route to host"]),
      "SOURCE_UNREACHABLE",
      /No route to host$/,
    ],
    [
      "RTSP server that accepts but never answers (I/O timeout)",
      exit(["rtsp://127.0.0.1:56497/cam: Invalid data found when processing input"]),
      "SOURCE_UNREACHABLE",
      /Invalid data found/,
    ],
    [
      "RTSP server frozen mid-stream: timed out, yet exit code 0",
      exit(
        [
          "[rtp @ 0x55ad2bc32e00] Timestamps are unset in a packet for stream 0. This is deprecated and will stop working in the future. Fix your code to set the timestamps properly",
          "rtsp://127.0.0.1:37155/cam: Connection timed out",
          "frame=   43 fps=6.0 q=-1.0 Lsize=      29kB time=00:00:02.73 bitrate=  86.8kbits/s speed=0.38x    ",
          "video:29kB audio:0kB subtitle:0kB other streams:0kB global headers:0kB muxing overhead: 1.531032%",
        ],
        { code: 0, inputOpened: true, inputCodec: "h264" },
      ),
      "SOURCE_UNREACHABLE",
      /Connection timed out$/,
    ],
    [
      "SRT connect timeout",
      exit(["[srt @ 0x5583873dd140] Connection to srt://127.0.0.1:45999 failed: Connection timed out", "srt://127.0.0.1:45999: Connection timed out"], { scheme: "srt" }),
      "SOURCE_UNREACHABLE",
      /Connection timed out$/,
    ],
    [
      "UDP: nothing arrived before -timeout",
      exit(["udp://127.0.0.1:45999: Input/output error"], { scheme: "udp" }),
      "SOURCE_UNREACHABLE",
      /Input\/output error$/,
    ],
    [
      "missing file",
      exit(["file:/nonexistent/x.mp4: No such file or directory"], { scheme: "file" }),
      "SOURCE_UNREACHABLE",
      /No such file or directory$/,
    ],
    [
      "MJPEG copied into the H.264 filter",
      exit(
        [
          "[h264_mp4toannexb @ 0x558fa6cfbd80] Codec 'mjpeg' (7) is not supported by the bitstream filter 'h264_mp4toannexb'. Supported codecs are: h264 (27) ",
          "Error initializing bitstream filter: h264_mp4toannexb",
          "Error initializing output stream 0:0 -- ",
        ],
        { inputOpened: true },
      ),
      "UNSUPPORTED_CODEC",
      /^\[h264_mp4toannexb\] Codec 'mjpeg' \(7\) is not supported/,
    ],
    [
      "HEVC named on the input line, copy cut short",
      exit(["  Stream #0:0: Video: hevc (Main), yuv420p(tv), 640x360, 15 fps, 15 tbr, 90k tbn"], { code: null, signal: "SIGKILL", inputOpened: true, inputCodec: "hevc" }),
      "UNSUPPORTED_CODEC",
      /hevc, not H\.264/,
    ],
    [
      "source closed the connection (camera died): exit 0, no error line",
      exit(["frame=   58 fps= 29 q=-1.0 Lsize=      38kB time=00:00:03.73 bitrate=  82.8kbits/s speed= 1.9x    ", "video:37kB audio:0kB subtitle:0kB other streams:0kB global headers:0kB muxing overhead: 1.529647%"], {
        code: 0,
        inputOpened: true,
        inputCodec: "h264",
      }),
      "FFMPEG_EXITED",
      /^the source ended the stream \(ffmpeg exited with code 0\)/,
    ],
    [
      "killed from outside with SIGTERM",
      exit(["av_interleaved_write_frame(): Immediate exit requested", "Error writing trailer of rtp://127.0.0.1:40000?pkt_size=1200: Immediate exit requested", "Exiting normally, received signal 15."], {
        code: 255,
        inputOpened: true,
        inputCodec: "h264",
      }),
      "FFMPEG_EXITED",
      /^ffmpeg exited with code 255: av_interleaved_write_frame\(\): Immediate exit requested \| Error writing trailer/,
    ],
    [
      "ffmpeg missing (setpriv could not exec it)",
      exit(["setpriv: failed to execute ffmpeg: No such file or directory"], { code: 127 }),
      "FFMPEG_EXITED",
      /^ffmpeg exited with code 127: setpriv: failed to execute ffmpeg/,
    ],
  ];

  test.each(cases)("%s", (_name, input, code, detail) => {
    const got = classifyFfmpegExit(input);
    expect(got.code).toBe(code);
    expect(got.detail).toMatch(detail);
  });

  test("a host or path that spells a status code does not read as one", () => {
    const got = classifyFfmpegExit(exit(["rtsp://cam-401.local/Unauthorized: Connection refused"]));
    expect(got.code).toBe("SOURCE_UNREACHABLE");
  });

  test("the detail never carries credentials, even in the generic case", () => {
    const got = classifyFfmpegExit(exit(["rtsp://admin:hunter2@10.0.0.5/s: Something odd happened", "http://x/y?token=abc123 failed"], { code: 1 }));
    expect(got.code).toBe("FFMPEG_EXITED");
    expect(got.detail).not.toMatch(/hunter2|abc123/);
  });
});
