package dev.edgekd.core;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;

/** Model output to the top-k list the screen shows: dequantize, softmax, rank. */
public final class Postprocessor {
    private Postprocessor() {
    }

    /** One ranked class. */
    public static final class Recognition {
        public final int index;
        public final String label;
        /** Probability in 0..1 (softmax of the logits). */
        public final float score;

        public Recognition(int index, String label, float score) {
            this.index = index;
            this.label = label;
            this.score = score;
        }

        @Override
        public String toString() {
            return label + " " + String.format(java.util.Locale.ROOT, "%.3f", score);
        }
    }

    /** {@code (q - zeroPoint) * scale} in float32, the same arithmetic as numpy on float32. */
    public static float[] dequantize(byte[] raw, float scale, int zeroPoint, boolean signed) {
        float[] out = new float[raw.length];
        for (int i = 0; i < raw.length; i++) {
            int q = signed ? raw[i] : (raw[i] & 0xFF);
            out[i] = (float) (q - zeroPoint) * scale;
        }
        return out;
    }

    /** Reads {@code n} native-order floats from an output buffer (position 0). */
    public static float[] readFloats(ByteBuffer buffer, int n) {
        float[] out = new float[n];
        ByteBuffer b = buffer.duplicate().order(buffer.order());
        b.rewind();
        for (int i = 0; i < n; i++) {
            out[i] = b.getFloat();
        }
        return out;
    }

    /** Numerically stable softmax (max subtracted, summed in double). */
    public static float[] softmax(float[] logits) {
        if (logits.length == 0) {
            return new float[0];
        }
        double max = Double.NEGATIVE_INFINITY;
        for (float v : logits) {
            max = Math.max(max, v);
        }
        double[] e = new double[logits.length];
        double sum = 0;
        for (int i = 0; i < logits.length; i++) {
            e[i] = Math.exp(logits[i] - max);
            sum += e[i];
        }
        float[] out = new float[logits.length];
        for (int i = 0; i < logits.length; i++) {
            out[i] = (float) (e[i] / sum);
        }
        return out;
    }

    /**
     * Indices of the k largest scores, largest first; equal scores keep the lower index first
     * (the same order as Python's {@code sorted(range(n), key=lambda i: (-s[i], i))}).
     */
    public static int[] topKIndices(float[] scores, int k) {
        int n = Math.min(Math.max(k, 0), scores.length);
        int[] idx = new int[n];
        boolean[] taken = new boolean[scores.length];
        for (int r = 0; r < n; r++) {
            int best = -1;
            for (int i = 0; i < scores.length; i++) {
                if (!taken[i] && (best < 0 || scores[i] > scores[best])) {
                    best = i;
                }
            }
            taken[best] = true;
            idx[r] = best;
        }
        return idx;
    }

    /**
     * Ranks classes by the (dequantized) model output and reports softmax probabilities.
     * Ranking uses the raw outputs, not the probabilities, so that float rounding in softmax can
     * never reorder two classes differently from Python.
     */
    public static List<Recognition> classify(float[] outputs, ModelInfo info, int k) {
        if (outputs.length != info.numClasses) {
            throw new IllegalArgumentException("model returned " + outputs.length + " values for "
                    + info.numClasses + " labels");
        }
        float[] probs = "logits".equals(info.outputKind) ? softmax(outputs) : outputs;
        List<Recognition> out = new ArrayList<Recognition>();
        for (int i : topKIndices(outputs, k)) {
            out.add(new Recognition(i, info.labels.get(i), probs[i]));
        }
        return out;
    }
}
