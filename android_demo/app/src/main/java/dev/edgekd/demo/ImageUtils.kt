package dev.edgekd.demo

import android.content.ContentResolver
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.graphics.Matrix
import android.net.Uri
import androidx.camera.core.ImageProxy
import java.io.IOException

/**
 * Most pixels a gallery image is decoded to (64 MB as ARGB_8888): a 50 MP photo would otherwise need
 * 200 MB of heap for one bitmap and crash the app with OutOfMemoryError.
 */
const val MAX_DECODE_PIXELS = 16_000_000L

/** The power-of-two BitmapFactory.inSampleSize that brings width x height under maxPixels (1: full size). */
fun sampleSizeFor(width: Int, height: Int, maxPixels: Long = MAX_DECODE_PIXELS): Int {
    var s = 1
    while ((width.toLong() / s) * (height.toLong() / s) > maxPixels) s *= 2
    return s
}

/**
 * Decodes a gallery image the way the Python contract reads files: 8-bit RGB(A), alpha ignored
 * (not premultiplied), grey replicated to R=G=B by the decoder, EXIF orientation not applied
 * (PIL does not apply it either), full resolution up to MAX_DECODE_PIXELS. A larger image is decoded
 * subsampled (inSampleSize, a power of two, read from its bounds first), which keeps memory bounded and
 * changes the resize slightly compared with Python (the model input is far smaller than either).
 */
fun decodeImage(resolver: ContentResolver, uri: Uri): Bitmap {
    val bounds = BitmapFactory.Options().apply { inJustDecodeBounds = true }
    resolver.openInputStream(uri)?.use { BitmapFactory.decodeStream(it, null, bounds) }
    if (bounds.outWidth <= 0 || bounds.outHeight <= 0) throw IOException("cannot decode $uri as an image")
    val options = BitmapFactory.Options().apply {
        inPreferredConfig = Bitmap.Config.ARGB_8888
        inPremultiplied = false
        inSampleSize = sampleSizeFor(bounds.outWidth, bounds.outHeight)
    }
    val bitmap = resolver.openInputStream(uri)?.use { BitmapFactory.decodeStream(it, null, options) }
    return bitmap ?: throw IOException("cannot decode $uri as an image")
}

/** A camera frame (RGBA_8888 analysis output) as an upright bitmap. */
fun ImageProxy.toUprightBitmap(): Bitmap {
    val frame = toBitmap() // CameraX 1.3+
    val degrees = imageInfo.rotationDegrees
    if (degrees == 0) return frame
    val matrix = Matrix().apply { postRotate(degrees.toFloat()) }
    return Bitmap.createBitmap(frame, 0, 0, frame.width, frame.height, matrix, false)
}
