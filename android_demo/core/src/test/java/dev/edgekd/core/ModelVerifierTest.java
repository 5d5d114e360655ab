package dev.edgekd.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.nio.ByteBuffer;
import java.nio.charset.Charset;

import org.junit.Test;

public class ModelVerifierTest {
    private static final Charset ASCII = Charset.forName("US-ASCII");

    @Test
    public void hashesBytesAndBuffersAlike() {
        assertEquals(TestModels.SHA_ABC, ModelVerifier.sha256Hex("abc".getBytes(ASCII)));
        ByteBuffer direct = ByteBuffer.allocateDirect(3);
        direct.put("abc".getBytes(ASCII));
        direct.rewind();
        assertEquals(TestModels.SHA_ABC, ModelVerifier.sha256Hex(direct));
        assertEquals("hashing must not move the caller's buffer", 0, direct.position());
    }

    @Test
    public void acceptsTheModelModelJsonNames() throws Exception {
        ByteBuffer model = ByteBuffer.wrap("abc".getBytes(ASCII));
        model.position(2); // verify hashes the whole buffer regardless of position
        ModelVerifier.verify(model, TestModels.parse("NHWC", "float32"));
    }

    @Test
    public void refusesAModelWithAnotherHash() {
        try {
            ModelVerifier.verify(ByteBuffer.wrap("abd".getBytes(ASCII)), TestModels.parse("NHWC", "float32"));
            fail("a model with the wrong sha256 was accepted");
        } catch (ModelRejectedException e) {
            assertTrue(e.getMessage(), e.getMessage().startsWith("Model refused"));
            assertTrue(e.getMessage(), e.getMessage().contains("ba7816bf8f01"));
        }
    }
}
