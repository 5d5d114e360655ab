package dev.edgekd.demo

import android.content.Context
import android.content.res.AssetManager
import android.graphics.Bitmap
import android.os.SystemClock
import dev.edgekd.core.ModelInfo
import dev.edgekd.core.ModelRejectedException
import dev.edgekd.core.ModelVerifier
import dev.edgekd.core.Postprocessor
import dev.edgekd.core.Preprocessor
import org.tensorflow.lite.DataType
import org.tensorflow.lite.Interpreter
import java.io.Closeable
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.MappedByteBuffer
import java.nio.channels.FileChannel

/** Top-k classes and where the time went, in milliseconds. */
data class Classification(
    val top: List<Postprocessor.Recognition>,
    val preprocessMs: Double,
    val inferenceMs: Double,
    val totalMs: Double,
)

/**
 * LiteRT interpreter around the model in assets. All pre- and post-processing is in the pure-Java
 * :core module (the code the JVM golden-vector tests check); this class only moves pixels and
 * buffers between Android, core and the interpreter.
 */
class Classifier private constructor(
    val info: ModelInfo,
    private val interpreter: Interpreter,
) : Closeable {
    private val inputTensor = interpreter.getInputTensor(0)
    private val outputTensor = interpreter.getOutputTensor(0)
    private val inputBuffer: ByteBuffer =
        ByteBuffer.allocateDirect(Preprocessor.inputBytes(info.input)).order(ByteOrder.nativeOrder())
    private val outputBuffer: ByteBuffer =
        ByteBuffer.allocateDirect(outputTensor.numBytes()).order(ByteOrder.nativeOrder())
    private var closed = false

    /** Called from the camera thread and from coroutines: one inference at a time. */
    @Synchronized
    fun classify(bitmap: Bitmap, topK: Int = 3): Classification {
        check(!closed) { "classifier is closed" }
        val t0 = SystemClock.elapsedRealtimeNanos()
        val pixels = IntArray(bitmap.width * bitmap.height)
        bitmap.getPixels(pixels, 0, bitmap.width, 0, 0, bitmap.width, bitmap.height)
        val tensor = Preprocessor.toInputTensor(pixels, bitmap.width, bitmap.height, info.input)
        val q = inputTensor.quantizationParams() // scale 0 / zero point 0 for float inputs (unused then)
        Preprocessor.fillInputBuffer(tensor, info.input, q.scale, q.zeroPoint, inputBuffer)
        val t1 = SystemClock.elapsedRealtimeNanos()

        outputBuffer.rewind()
        interpreter.run(inputBuffer, outputBuffer)
        val t2 = SystemClock.elapsedRealtimeNanos()

        val outputs = when (outputTensor.dataType()) {
            DataType.FLOAT32 -> Postprocessor.readFloats(outputBuffer, info.numClasses)
            DataType.INT8, DataType.UINT8 -> {
                val raw = ByteArray(info.numClasses)
                outputBuffer.rewind()
                outputBuffer.get(raw)
                val oq = outputTensor.quantizationParams()
                Postprocessor.dequantize(raw, oq.scale, oq.zeroPoint, outputTensor.dataType() == DataType.INT8)
            }
            else -> error("unsupported output type ${outputTensor.dataType()}")
        }
        val top = Postprocessor.classify(outputs, info, topK)
        val t3 = SystemClock.elapsedRealtimeNanos()
        return Classification(top, ms(t1 - t0), ms(t2 - t1), ms(t3 - t0))
    }

    @Synchronized
    override fun close() {
        if (!closed) {
            closed = true
            interpreter.close()
        }
    }

    companion object {
        private const val MODEL_JSON = "model.json"
        private const val LABELS_TXT = "labels.txt"

        private fun ms(nanos: Long) = nanos / 1e6

        /**
         * Loads model.json, labels.txt and the model from assets and refuses anything that does not
         * match: a wrong sha256, other labels, or tensors of another shape or type. The
         * [ModelRejectedException] message is shown on screen as it is.
         */
        @Throws(ModelRejectedException::class)
        fun load(context: Context, threads: Int = 4): Classifier {
            val assets = context.assets
            val present = assets.list("")?.toSet() ?: emptySet()
            if (MODEL_JSON !in present) {
                throw ModelRejectedException(
                    "No model installed. On a computer, run `edgekd android install RUN_DIR` and rebuild the app."
                )
            }
            val info = ModelInfo.parse(readText(assets, MODEL_JSON))
            if (LABELS_TXT !in present) throw ModelRejectedException("$LABELS_TXT is missing from the app's assets")
            info.checkLabels(readText(assets, LABELS_TXT).lines())
            if (info.file !in present) throw ModelRejectedException("${info.file} is missing from the app's assets")

            val model = mapAsset(assets, info.file)
            ModelVerifier.verify(model, info)

            // LiteRT's CPU path applies the XNNPACK delegate by default; threads speed up conv layers.
            val interpreter = Interpreter(model, Interpreter.Options().setNumThreads(threads))
            try {
                info.checkInputShape(interpreter.getInputTensor(0).shape())
                info.checkOutputShape(interpreter.getOutputTensor(0).shape())
                val inType = interpreter.getInputTensor(0).dataType()
                val expected = when (info.input.dtype) {
                    "int8" -> DataType.INT8
                    "uint8" -> DataType.UINT8
                    else -> DataType.FLOAT32
                }
                if (inType != expected) {
                    throw ModelRejectedException("model input type $inType but model.json says ${info.input.dtype}")
                }
            } catch (e: ModelRejectedException) {
                interpreter.close()
                throw e
            }
            return Classifier(info, interpreter)
        }

        private fun readText(assets: AssetManager, name: String): String =
            assets.open(name).bufferedReader(Charsets.UTF_8).use { it.readText() }

        /** Memory-maps an asset; needs it stored uncompressed (noCompress += "tflite"). */
        private fun mapAsset(assets: AssetManager, name: String): MappedByteBuffer {
            val fd = try {
                assets.openFd(name)
            } catch (e: java.io.IOException) {
                throw ModelRejectedException("$name is compressed in the APK: keep noCompress += \"tflite\"", e)
            }
            return fd.use {
                FileInputStream(it.fileDescriptor).use { stream ->
                    stream.channel.map(FileChannel.MapMode.READ_ONLY, it.startOffset, it.declaredLength)
                }
            }
        }
    }
}
