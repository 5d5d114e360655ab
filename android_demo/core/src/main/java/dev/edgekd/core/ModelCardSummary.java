package dev.edgekd.core;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Locale;

import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;

/**
 * The "About this model" text: the {@code summary} of model_card.json (schema "edgekd.model_card/1"),
 * written by edgekd next to the exported model and installed into the app's assets by
 * {@code edgekd android install}. Every figure in it comes from the run's report; this class only picks
 * the lines, including the one about the installed file (matched by its sha256 from model.json).
 */
public final class ModelCardSummary {
    public static final String SCHEMA = "edgekd.model_card/1";

    public final String title;
    /** General lines (teacher, data and licence, accuracy, per-class recall, verdict, intended use). */
    public final List<String> lines;
    /** The line about the installed artifact, or null when the card does not list that file. */
    public final String thisFile;
    public final List<String> limitations;

    private ModelCardSummary(String title, List<String> lines, String thisFile, List<String> limitations) {
        this.title = title;
        this.lines = Collections.unmodifiableList(lines);
        this.thisFile = thisFile;
        this.limitations = Collections.unmodifiableList(limitations);
    }

    /**
     * @param json        model_card.json
     * @param modelSha256 sha256 of the installed model (model.json), to pick its line; may be null
     */
    public static ModelCardSummary parse(String json, String modelSha256) throws ModelRejectedException {
        try {
            JSONObject card = new JSONObject(json);
            if (!SCHEMA.equals(card.optString("schema"))) {
                throw new ModelRejectedException("model_card.json: schema is not " + SCHEMA);
            }
            JSONObject s = card.getJSONObject("summary");
            String thisFile = null;
            JSONObject byArtifact = s.optJSONObject("by_artifact_sha256");
            if (byArtifact != null && modelSha256 != null) {
                thisFile = byArtifact.optString(modelSha256.toLowerCase(Locale.ROOT), null);
            }
            return new ModelCardSummary(
                    s.getString("title"), strings(s.getJSONArray("lines")), thisFile,
                    strings(s.optJSONArray("limitations")));
        } catch (JSONException e) {
            throw new ModelRejectedException("model_card.json is not a valid model card: " + e.getMessage());
        }
    }

    private static List<String> strings(JSONArray a) throws JSONException {
        List<String> out = new ArrayList<>();
        if (a != null) {
            for (int i = 0; i < a.length(); i++) {
                out.add(a.getString(i));
            }
        }
        return out;
    }

    /** The screen's text: title, this file's line, the general lines, then the limitations as a list. */
    public String text() {
        StringBuilder b = new StringBuilder(title).append("\n\n");
        if (thisFile != null) {
            b.append(thisFile).append("\n\n");
        }
        for (String line : lines) {
            b.append(line).append("\n");
        }
        if (!limitations.isEmpty()) {
            b.append("\nKnown limitations:\n");
            for (String line : limitations) {
                b.append("\u2022 ").append(line).append("\n");
            }
        }
        return b.toString().trim();
    }
}
