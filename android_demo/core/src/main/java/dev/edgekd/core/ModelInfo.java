package dev.edgekd.core;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Locale;

import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;

/**
 * model.json (schema "edgekd.model/1"), written by `edgekd export` next to model.tflite.
 * It is the single source of truth for labels and preprocessing: the app never hard-codes them.
 */
public final class ModelInfo {
    public static final String SCHEMA = "edgekd.model/1";
    /** The only resize algorithm the app implements (see {@link Preprocessor}). */
    public static final String RESIZE_BILINEAR_HALF_PIXEL = "bilinear_half_pixel";

    /** Input tensor description. */
    public static final class InputSpec {
        public final String layout; // "NHWC" or "NCHW"
        public final int height;
        public final int width;
        public final int channels;
        public final String dtype; // "float32", "int8" or "uint8"
        public final String colorMode;
        public final float[] mean;
        public final float[] std;
        public final float scale;
        public final String resize;

        public InputSpec(String layout, int height, int width, int channels, String dtype, String colorMode,
                         float[] mean, float[] std, float scale, String resize) {
            this.layout = layout;
            this.height = height;
            this.width = width;
            this.channels = channels;
            this.dtype = dtype;
            this.colorMode = colorMode;
            this.mean = mean.clone();
            this.std = std.clone();
            this.scale = scale;
            this.resize = resize;
        }

        public boolean isNchw() {
            return "NCHW".equals(layout);
        }

        public boolean isQuantized() {
            return "int8".equals(dtype) || "uint8".equals(dtype);
        }

        /** Expected tensor shape, batch 1. */
        public int[] shape() {
            return isNchw() ? new int[] {1, channels, height, width} : new int[] {1, height, width, channels};
        }

        /** Number of elements of the input tensor. */
        public int size() {
            return height * width * channels;
        }
    }

    public final String name;
    public final String arch;
    public final String format;
    public final String precision;
    public final String file;
    public final String sha256;
    public final List<String> labels;
    public final int numClasses;
    public final InputSpec input;
    /** "logits" (softmax applied by the app) or "probabilities" (used as they are). */
    public final String outputKind;

    private ModelInfo(String name, String arch, String format, String precision, String file, String sha256,
                      List<String> labels, int numClasses, InputSpec input, String outputKind) {
        this.name = name;
        this.arch = arch;
        this.format = format;
        this.precision = precision;
        this.file = file;
        this.sha256 = sha256;
        this.labels = Collections.unmodifiableList(new ArrayList<String>(labels));
        this.numClasses = numClasses;
        this.input = input;
        this.outputKind = outputKind;
    }

    /** Parses and validates model.json; every problem becomes a one-line, user-readable message. */
    public static ModelInfo parse(String json) throws ModelRejectedException {
        try {
            JSONObject o = new JSONObject(json);
            String schema = o.optString("schema", "");
            if (!SCHEMA.equals(schema)) {
                throw new ModelRejectedException("model.json: unsupported schema '" + schema + "', expected " + SCHEMA);
            }
            String format = o.getString("format");
            if (!"tflite".equals(format)) {
                throw new ModelRejectedException("model.json: format is '" + format + "', this app runs tflite");
            }
            String sha = o.getString("sha256").toLowerCase(Locale.ROOT);
            if (!sha.matches("[0-9a-f]{64}")) {
                throw new ModelRejectedException("model.json: sha256 is not 64 hex digits");
            }
            JSONArray labelArray = o.getJSONArray("labels");
            List<String> labels = new ArrayList<String>();
            for (int i = 0; i < labelArray.length(); i++) {
                labels.add(labelArray.getString(i));
            }
            int numClasses = o.getInt("num_classes");
            if (numClasses < 1 || labels.size() != numClasses) {
                throw new ModelRejectedException("model.json: " + labels.size() + " labels but num_classes is " + numClasses);
            }
            JSONObject out = o.getJSONObject("output");
            String kind = out.optString("kind", "logits");
            if (!"logits".equals(kind) && !"probabilities".equals(kind)) {
                throw new ModelRejectedException("model.json: output.kind '" + kind + "' is not logits or probabilities");
            }
            if (out.has("num_classes") && out.getInt("num_classes") != numClasses) {
                throw new ModelRejectedException("model.json: output.num_classes " + out.getInt("num_classes")
                        + " != num_classes " + numClasses);
            }
            return new ModelInfo(o.optString("name", "model"), o.optString("arch", ""), format,
                    o.optString("precision", ""), o.optString("file", "model.tflite"), sha, labels, numClasses,
                    parseInput(o.getJSONObject("input")), kind);
        } catch (JSONException e) {
            throw new ModelRejectedException("model.json is invalid: " + e.getMessage(), e);
        }
    }

    private static InputSpec parseInput(JSONObject in) throws JSONException, ModelRejectedException {
        String layout = in.getString("layout");
        if (!"NHWC".equals(layout) && !"NCHW".equals(layout)) {
            throw new ModelRejectedException("model.json: input.layout '" + layout + "' is not NHWC or NCHW");
        }
        int channels = in.getInt("channels");
        String colorMode = in.optString("color_mode", "RGB");
        if (channels != 3 || !"RGB".equals(colorMode)) {
            throw new ModelRejectedException("model.json: only 3-channel RGB input is supported");
        }
        int h = in.getInt("height");
        int w = in.getInt("width");
        if (h < 1 || w < 1) {
            throw new ModelRejectedException("model.json: input size " + w + "x" + h + " is invalid");
        }
        String dtype = in.getString("dtype");
        if (!"float32".equals(dtype) && !"int8".equals(dtype) && !"uint8".equals(dtype)) {
            throw new ModelRejectedException("model.json: input.dtype '" + dtype + "' is not float32, int8 or uint8");
        }
        String resize = in.optString("resize", RESIZE_BILINEAR_HALF_PIXEL);
        if (!RESIZE_BILINEAR_HALF_PIXEL.equals(resize)) {
            throw new ModelRejectedException("model.json: resize '" + resize + "' is not implemented (only "
                    + RESIZE_BILINEAR_HALF_PIXEL + ")");
        }
        float[] mean = floats(in.getJSONArray("mean"), "mean");
        float[] std = floats(in.getJSONArray("std"), "std");
        for (float s : std) {
            if (!(s > 0f)) {
                throw new ModelRejectedException("model.json: input.std must be > 0");
            }
        }
        float scale = (float) in.optDouble("scale", 1.0 / 255.0);
        return new InputSpec(layout, h, w, channels, dtype, colorMode, mean, std, scale, resize);
    }

    private static float[] floats(JSONArray a, String what) throws JSONException, ModelRejectedException {
        if (a.length() != 3) {
            throw new ModelRejectedException("model.json: input." + what + " needs 3 values, has " + a.length());
        }
        float[] f = new float[3];
        for (int i = 0; i < 3; i++) {
            f[i] = (float) a.getDouble(i);
        }
        return f;
    }

    /** labels.txt (one label a line, blank lines ignored) must repeat model.json's labels in order. */
    public void checkLabels(List<String> labelsTxt) throws ModelRejectedException {
        List<String> cleaned = new ArrayList<String>();
        for (String l : labelsTxt) {
            String t = l.trim();
            if (!t.isEmpty()) {
                cleaned.add(t);
            }
        }
        if (!cleaned.equals(labels)) {
            throw new ModelRejectedException("labels.txt " + cleaned + " does not match model.json labels " + labels);
        }
    }

    /** The interpreter's input tensor must have the shape model.json describes. */
    public void checkInputShape(int[] shape) throws ModelRejectedException {
        if (!Arrays.equals(shape, input.shape())) {
            throw new ModelRejectedException("model input shape " + Arrays.toString(shape) + " does not match model.json "
                    + input.layout + " " + Arrays.toString(input.shape()));
        }
    }

    /** The interpreter's output must hold exactly one score per label. */
    public void checkOutputShape(int[] shape) throws ModelRejectedException {
        int n = 1;
        for (int d : shape) {
            n *= d;
        }
        if (n != numClasses) {
            throw new ModelRejectedException("model output shape " + Arrays.toString(shape) + " has " + n
                    + " values but model.json has " + numClasses + " labels");
        }
    }

    public String shortHash() {
        return sha256.substring(0, 12);
    }

    /** e.g. "student · int8 · 3fa4c2d19e0b": what the screen shows about the loaded model. */
    public String describe() {
        return name + " \u00b7 " + precision + " \u00b7 " + shortHash();
    }
}
