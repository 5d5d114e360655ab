package dev.edgekd.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import org.junit.Test;

public class ModelCardSummaryTest {
    private static final String SHA = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    private static String card(String schema) {
        return "{\"schema\":\"" + schema + "\",\"summary\":{\"title\":\"elpv mobilenet_v3_small (distilled)\","
                + "\"lines\":[\"Test accuracy: student 70.9%.\",\"Trained on: elpv (CC BY-NC-SA 4.0).\"],"
                + "\"limitations\":[\"Class 'defect_1_3': 0.0%.\"],"
                + "\"by_artifact_sha256\":{\"" + SHA + "\":\"This file (tflite-int8): accuracy 70.6%.\"}}}";
    }

    @Test
    public void picksTheInstalledFilesLine() throws Exception {
        ModelCardSummary s = ModelCardSummary.parse(card(ModelCardSummary.SCHEMA), SHA.toUpperCase());
        assertEquals("elpv mobilenet_v3_small (distilled)", s.title);
        assertEquals("This file (tflite-int8): accuracy 70.6%.", s.thisFile);
        assertEquals(2, s.lines.size());
        String text = s.text();
        assertTrue(text, text.startsWith("elpv mobilenet_v3_small (distilled)\n\nThis file (tflite-int8)"));
        assertTrue(text, text.contains("Known limitations:\n\u2022 Class 'defect_1_3': 0.0%."));
    }

    @Test
    public void anotherModelGetsNoFileLine() throws Exception {
        ModelCardSummary s = ModelCardSummary.parse(card(ModelCardSummary.SCHEMA), "00" + SHA.substring(2));
        assertNull(s.thisFile);
        assertTrue(s.text().startsWith("elpv mobilenet_v3_small (distilled)\n\nTest accuracy"));
    }

    @Test
    public void refusesOtherFiles() {
        for (String json : new String[] {card("edgekd.model/1"), "{}", "not json"}) {
            try {
                ModelCardSummary.parse(json, SHA);
                fail("accepted " + json);
            } catch (ModelRejectedException expected) {
                assertTrue(expected.getMessage(), expected.getMessage().startsWith("model_card.json"));
            }
        }
    }
}
