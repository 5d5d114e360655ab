package dev.edgekd.core;

/**
 * The model bundle in the app's assets cannot be used (bad model.json, labels that do not
 * match, a tensor shape that does not match, or a model file whose sha256 differs from
 * model.json). The message is meant to be shown on screen as it is.
 */
public class ModelRejectedException extends Exception {
    private static final long serialVersionUID = 1L;

    public ModelRejectedException(String message) {
        super(message);
    }

    public ModelRejectedException(String message, Throwable cause) {
        super(message, cause);
    }
}
