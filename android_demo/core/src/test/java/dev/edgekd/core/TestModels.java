package dev.edgekd.core;

/** Small model.json texts for the unit tests. */
final class TestModels {
    static final String SHA_ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"; // sha256("abc")

    private TestModels() {
    }

    static String modelJson(String layout, String dtype, String labelsJson, int numClasses) {
        return "{\"schema\": \"edgekd.model/1\", \"name\": \"student\", \"arch\": \"mobilenet_v3_small\","
                + " \"format\": \"tflite\", \"precision\": \"int8\", \"file\": \"model.tflite\","
                + " \"sha256\": \"" + SHA_ABC + "\", \"labels\": " + labelsJson + ", \"num_classes\": " + numClasses + ","
                + " \"input\": {\"layout\": \"" + layout + "\", \"height\": 2, \"width\": 3, \"channels\": 3,"
                + " \"dtype\": \"" + dtype + "\", \"color_mode\": \"RGB\", \"mean\": [0.485, 0.456, 0.406],"
                + " \"std\": [0.229, 0.224, 0.225], \"scale\": 0.00392156862745098, \"resize\": \"bilinear_half_pixel\"},"
                + " \"output\": {\"kind\": \"logits\", \"num_classes\": " + numClasses + "}}";
    }

    static String modelJson(String layout, String dtype) {
        return modelJson(layout, dtype, "[\"defect_0\", \"defect_1_3\", \"defect_2_3\", \"defect_1\"]", 4);
    }

    static ModelInfo parse(String layout, String dtype) {
        try {
            return ModelInfo.parse(modelJson(layout, dtype));
        } catch (ModelRejectedException e) {
            throw new AssertionError(e);
        }
    }
}
