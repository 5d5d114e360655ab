package dev.edgekd.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.util.Arrays;

import org.junit.Test;

public class ModelInfoTest {
    @Test
    public void parsesTheContract() throws Exception {
        ModelInfo m = ModelInfo.parse(TestModels.modelJson("NHWC", "float32"));
        assertEquals("student", m.name);
        assertEquals("int8", m.precision);
        assertEquals(4, m.numClasses);
        assertEquals(Arrays.asList("defect_0", "defect_1_3", "defect_2_3", "defect_1"), m.labels);
        assertEquals(2, m.input.height);
        assertEquals(3, m.input.width);
        assertEquals(0.229f, m.input.std[0], 0f);
        assertEquals(1f / 255f, m.input.scale, 1e-9f);
        assertEquals("logits", m.outputKind);
        assertEquals("ba7816bf8f01", m.shortHash());
        assertEquals("student \u00b7 int8 \u00b7 ba7816bf8f01", m.describe());
    }

    @Test
    public void shapesFollowLayout() throws Exception {
        ModelInfo nhwc = TestModels.parse("NHWC", "float32");
        ModelInfo nchw = TestModels.parse("NCHW", "float32");
        assertArrayEquals(new int[] {1, 2, 3, 3}, nhwc.input.shape());
        assertArrayEquals(new int[] {1, 3, 2, 3}, nchw.input.shape());
        nhwc.checkInputShape(new int[] {1, 2, 3, 3});
        nchw.checkInputShape(new int[] {1, 3, 2, 3});
        rejects(nhwc, new int[] {1, 3, 2, 3});
        nhwc.checkOutputShape(new int[] {1, 4});
        try {
            nhwc.checkOutputShape(new int[] {1, 5});
            fail("5 outputs for 4 labels accepted");
        } catch (ModelRejectedException e) {
            assertTrue(e.getMessage(), e.getMessage().contains("4 labels"));
        }
    }

    private static void rejects(ModelInfo m, int[] shape) {
        try {
            m.checkInputShape(shape);
            fail("shape " + Arrays.toString(shape) + " accepted");
        } catch (ModelRejectedException expected) {
            assertTrue(expected.getMessage().contains("does not match"));
        }
    }

    @Test
    public void labelsTxtMustMatch() throws Exception {
        ModelInfo m = TestModels.parse("NHWC", "float32");
        m.checkLabels(Arrays.asList("defect_0", "defect_1_3", " defect_2_3", "defect_1", ""));
        try {
            m.checkLabels(Arrays.asList("defect_0", "defect_1"));
            fail("wrong labels accepted");
        } catch (ModelRejectedException expected) {
            assertTrue(expected.getMessage().contains("labels.txt"));
        }
    }

    @Test
    public void refusesBadModelJson() {
        String good = TestModels.modelJson("NHWC", "float32");
        bad(good.replace("edgekd.model/1", "edgekd.model/9"), "schema");
        bad(good.replace("\"format\": \"tflite\"", "\"format\": \"onnx\""), "format");
        bad(good.replace("\"NHWC\"", "\"CHWN\""), "layout");
        bad(good.replace("\"float32\"", "\"float16\""), "dtype");
        bad(good.replace("bilinear_half_pixel", "area"), "resize");
        bad(good.replace("\"std\": [0.229, 0.224, 0.225]", "\"std\": [0.229, 0.0, 0.225]"), "std");
        bad(good.replace("\"mean\": [0.485, 0.456, 0.406]", "\"mean\": [0.485]"), "mean");
        bad(good.replace(TestModels.SHA_ABC, "xyz"), "sha256");
        bad(TestModels.modelJson("NHWC", "float32", "[\"a\", \"b\"]", 4), "num_classes");
        bad("{not json", "invalid");
    }

    private static void bad(String json, String mentions) {
        try {
            ModelInfo.parse(json);
            fail("accepted model.json that should mention " + mentions);
        } catch (ModelRejectedException e) {
            assertTrue(e.getMessage() + " should mention " + mentions, e.getMessage().contains(mentions));
        }
    }
}
