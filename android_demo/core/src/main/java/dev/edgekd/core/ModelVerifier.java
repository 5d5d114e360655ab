package dev.edgekd.core;

import java.nio.ByteBuffer;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;

/** Refuses a model file whose sha256 is not the one model.json was written for. */
public final class ModelVerifier {
    private ModelVerifier() {
    }

    public static String sha256Hex(ByteBuffer data) {
        MessageDigest md = sha256();
        md.update(data.duplicate()); // duplicate: the caller's buffer position stays where it was
        return hex(md.digest());
    }

    public static String sha256Hex(byte[] data) {
        return hex(sha256().digest(data));
    }

    /**
     * Hashes the whole model (a memory-mapped asset is fine: it is read, not copied) and
     * compares it with model.json. The message is shown on screen as it is.
     */
    public static void verify(ByteBuffer model, ModelInfo info) throws ModelRejectedException {
        ByteBuffer whole = model.duplicate();
        whole.rewind();
        String actual = sha256Hex(whole);
        if (!actual.equals(info.sha256)) {
            throw new ModelRejectedException("Model refused: " + info.file + " has sha256 " + actual.substring(0, 12)
                    + "\u2026 but model.json expects " + info.sha256.substring(0, 12)
                    + "\u2026. The model file is corrupt or belongs to another export; reinstall it with "
                    + "`edgekd android install`.");
        }
    }

    private static MessageDigest sha256() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("SHA-256 is not available", e); // every Java/Android has it
        }
    }

    private static String hex(byte[] digest) {
        StringBuilder sb = new StringBuilder(digest.length * 2);
        for (byte b : digest) {
            sb.append(Character.forDigit((b >> 4) & 0xF, 16)).append(Character.forDigit(b & 0xF, 16));
        }
        return sb.toString();
    }
}
