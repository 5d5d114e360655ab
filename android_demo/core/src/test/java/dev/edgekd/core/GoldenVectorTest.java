package dev.edgekd.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.Charset;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;

import org.json.JSONArray;
import org.json.JSONObject;
import org.junit.Assume;
import org.junit.Test;

/**
 * Golden vectors written by `edgekd android install` (edgekd.android.golden) from the exported model
 * run in Python with LiteRT: for each image, the Java preprocessing must give the same input tensor
 * (within 1e-5; quantized values within one step) and the Java postprocessing of the model's raw
 * output must give the same top-k as Python. Files: classpath golden/index.txt, one JSON per line.
 */
public class GoldenVectorTest {
    static final Charset UTF8 = Charset.forName("UTF-8");
    static final float TENSOR_TOL = 1e-5f;

    @Test
    public void javaMatchesPythonOnGoldenVectors() throws Exception {
        List<String> names = index();
        Assume.assumeTrue("no golden vectors (golden/index.txt): run `edgekd android install RUN_DIR`", !names.isEmpty());
        int checked = 0;
        for (String name : names) {
            check(name, new JSONObject(resource("golden/" + name)));
            checked++;
        }
        System.out.println("GOLDEN OK: " + checked + " vectors");
    }

    private static void check(String name, JSONObject g) throws Exception {
        assertEquals(name, "edgekd.golden/1", g.getString("schema"));
        ModelInfo info = ModelInfo.parse(g.getJSONObject("model").toString());
        JSONObject image = g.getJSONObject("image");
        int w = image.getInt("width");
        int h = image.getInt("height");
        byte[] rgb = Base64.getDecoder().decode(image.getString("rgb_b64"));
        assertEquals(name + ": rgb size", w * h * 3, rgb.length);
        int[] argb = new int[w * h];
        for (int i = 0; i < argb.length; i++) {
            int alpha = (i * 37) & 0xFF; // arbitrary alpha: the contract drops it (no premultiply)
            argb[i] = (alpha << 24) | ((rgb[3 * i] & 0xFF) << 16) | ((rgb[3 * i + 1] & 0xFF) << 8) | (rgb[3 * i + 2] & 0xFF);
        }

        // preprocessing: same tensor as Python
        JSONObject input = g.getJSONObject("input");
        info.checkInputShape(ints(input.getJSONArray("shape")));
        float[] expected = floats(Base64.getDecoder().decode(input.getString("float_b64")));
        float[] actual = Preprocessor.toInputTensor(argb, w, h, info.input);
        assertEquals(name + ": tensor size", expected.length, actual.length);
        float maxDiff = 0f;
        int worst = -1;
        for (int i = 0; i < expected.length; i++) {
            float d = Math.abs(expected[i] - actual[i]);
            if (d > maxDiff) {
                maxDiff = d;
                worst = i;
            }
        }
        assertTrue(name + ": max |java - python| = " + maxDiff + " at " + worst, maxDiff <= TENSOR_TOL);

        int off = 0;
        if (!input.isNull("quantization")) {
            JSONObject q = input.getJSONObject("quantization");
            boolean signed = "int8".equals(q.getString("dtype"));
            byte[] want = Base64.getDecoder().decode(q.getString("q_b64"));
            byte[] got = Preprocessor.quantize(actual, (float) q.getDouble("scale"), q.getInt("zero_point"), signed);
            for (int i = 0; i < want.length; i++) {
                int a = signed ? got[i] : got[i] & 0xFF;
                int b = signed ? want[i] : want[i] & 0xFF;
                assertTrue(name + ": quantized value " + i + " differs by " + (a - b), Math.abs(a - b) <= 1);
                off += a != b ? 1 : 0;
            }
            // only values sitting on a rounding boundary may differ (tensor differences are ~1e-7)
            assertTrue(name + ": " + off + " quantized values differ", off <= Math.max(1, want.length / 1000));
        }

        // postprocessing: Python's raw output -> same logits and top-k
        JSONObject output = g.getJSONObject("output");
        byte[] raw = Base64.getDecoder().decode(output.getString("raw_b64"));
        info.checkOutputShape(ints(output.getJSONArray("shape")));
        float[] logits;
        String dtype = output.getString("dtype");
        if ("float32".equals(dtype)) {
            logits = floats(raw);
        } else {
            JSONObject oq = output.getJSONObject("quantization");
            logits = Postprocessor.dequantize(raw, (float) oq.getDouble("scale"), oq.getInt("zero_point"), "int8".equals(dtype));
        }
        JSONArray pyLogits = g.getJSONArray("logits");
        for (int i = 0; i < logits.length; i++) {
            assertEquals(name + ": logit " + i, pyLogits.getDouble(i), logits[i], 1e-6);
        }
        JSONArray topk = g.getJSONArray("topk");
        List<Postprocessor.Recognition> top = Postprocessor.classify(logits, info, topk.length());
        assertEquals(name + ": top-k length", topk.length(), top.size());
        for (int r = 0; r < top.size(); r++) {
            JSONObject want = topk.getJSONObject(r);
            assertEquals(name + ": rank " + r + " index", want.getInt("index"), top.get(r).index);
            assertEquals(name + ": rank " + r + " label", want.getString("label"), top.get(r).label);
            assertEquals(name + ": rank " + r + " score", want.getDouble("score"), top.get(r).score, 1e-5);
        }
        System.out.println("golden " + name + " (" + g.getString("source") + ", " + w + "x" + h + " -> "
                + info.input.width + "x" + info.input.height + " " + info.input.layout + " " + info.input.dtype
                + "): max tensor diff " + maxDiff + ", quantized values off by one " + off + ", top-" + top.size() + " "
                + top);
    }

    static List<String> index() throws IOException {
        List<String> names = new ArrayList<String>();
        InputStream in = GoldenVectorTest.class.getClassLoader().getResourceAsStream("golden/index.txt");
        if (in == null) {
            return names;
        }
        for (String line : new String(readAll(in), UTF8).split("\n")) {
            if (!line.trim().isEmpty()) {
                names.add(line.trim());
            }
        }
        return names;
    }

    static String resource(String path) throws IOException {
        InputStream in = GoldenVectorTest.class.getClassLoader().getResourceAsStream(path);
        assertNotNull("missing resource " + path, in);
        return new String(readAll(in), UTF8);
    }

    static byte[] readAll(InputStream in) throws IOException {
        try {
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            byte[] buf = new byte[1 << 16];
            int n;
            while ((n = in.read(buf)) > 0) {
                out.write(buf, 0, n);
            }
            return out.toByteArray();
        } finally {
            in.close();
        }
    }

    /** Little-endian float32, as numpy's {@code astype("<f4").tobytes()} writes them. */
    static float[] floats(byte[] b) {
        ByteBuffer bb = ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN);
        float[] f = new float[b.length / 4];
        bb.asFloatBuffer().get(f);
        return f;
    }

    static int[] ints(JSONArray a) throws Exception {
        int[] r = new int[a.length()];
        for (int i = 0; i < r.length; i++) {
            r[i] = a.getInt(i);
        }
        return r;
    }
}
